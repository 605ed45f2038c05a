using FastMM.Runtime.Tokenizers;

namespace FastMM.Tests.Tokenizers;

/// <summary>Our own Unicode tables (the runtime is InvariantGlobalization) and the Oniguruma regex shim.</summary>
public class UnicodeAndRegexTests
{
    [Theory]
    [InlineData("e\u0301", "\u00e9", "\u00e9")]                 // composition
    [InlineData("\u212b", "\u00c5", "\u00c5")]                  // singleton decomposition (Angstrom sign)
    [InlineData("\ufb01", "\ufb01", "fi")]                      // compatibility ligature only under NFKC
    [InlineData("\u00bd x\u00b2", "\u00bd x\u00b2", "1\u20442 x2")]
    [InlineData("\u1100\u1161\u11a8", "\uac01", "\uac01")]      // Hangul L V T
    [InlineData("a\u0328\u0301", "\u0105\u0301", "\u0105\u0301")] // canonical ordering then composition
    [InlineData("\uff21\u3000", "\uff21\u3000", "A ")]          // full-width letter and ideographic space
    public void NormalizationForms(string input, string nfc, string nfkc)
    {
        Assert.Equal(nfc, UnicodeText.Normalize(input, compose: true, compat: false));
        Assert.Equal(nfkc, UnicodeText.Normalize(input, compose: true, compat: true));
    }

    [Theory]
    [InlineData("İ", "i\u0307")]   // Rust char::to_lowercase, not .NET's simple mapping
    [InlineData("ΣΑΣ", "σασ")]     // per char: no final-sigma rule
    [InlineData("ABC déjà Ǆ", "abc déjà ǆ")]
    [InlineData("\U00010400", "\U00010428")] // astral (Deseret)
    public void Lowercase(string input, string expected) => Assert.Equal(expected, UnicodeText.ToLower(input));

    [Fact]
    public void PropertyClassesMatchWholeAstralCodePoints()
    {
        // U+1D400 (math bold A) and U+20000 (CJK Ext. B) are letters; U+1F600 is not.
        var letters = OnigRegex.Get(@"\p{L}+");
        Assert.Equal("a\U0001D400\U00020000b", letters.Match("a\U0001D400\U00020000b!").Value);
        var other = OnigRegex.Get(@"[^\s\p{L}\p{N}]+");
        Assert.Equal("\U0001F600!", other.Match("x\U0001F600!\U0001D400").Value);
        var digits = OnigRegex.Get(@"[\p{N}]");
        Assert.Equal("\U0001D7CF", digits.Match("x\U0001D7CF").Value); // math bold digit 1
    }
}
