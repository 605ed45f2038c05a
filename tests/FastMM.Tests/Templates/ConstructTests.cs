using FastMM.Runtime.Templates;

namespace FastMM.Tests.Templates;

/// <summary>Individual jinja2 constructs (whitespace control, operators, filters, tests, scoping, errors) against jinja2's own output.</summary>
public class ConstructTests
{
    public static TheoryData<string> Constructs() => new(TemplateFixtures.ConstructNames);

    [Theory]
    [MemberData(nameof(Constructs))]
    public void MatchesJinja2(string name)
    {
        var c = TemplateFixtures.Construct(name);
        string source = c.GetProperty("template").GetString()!;
        var vars = TemplateFixtures.Variables(c.GetProperty("variables"));
        bool parseError = c.TryGetProperty("parse_error", out var pe) && pe.GetBoolean();

        if (TemplateFixtures.OptString(c, "error") is { } error)
        {
            // jinja2 raised: we must raise one ChatTemplateException (at parse time when jinja2 failed to compile).
            var ex = parseError
                ? Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source, "t"))
                : Assert.Throws<ChatTemplateException>(() => Parse(source).Render(vars));
            Assert.StartsWith("t", ex.Message);
            if (error.StartsWith("TemplateError: ", StringComparison.Ordinal))
                Assert.Equal(error["TemplateError: ".Length..], ex.TemplateMessage);
            return;
        }
        Assert.Equal(c.GetProperty("expected").GetString(), Parse(source).Render(vars));
    }

    private static ChatTemplate Parse(string source) => ChatTemplate.Parse(source, "t").WithClock(TemplateFixtures.FixedClock);
}
