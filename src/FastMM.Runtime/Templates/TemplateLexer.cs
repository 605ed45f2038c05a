using System.Globalization;
using System.Text;

namespace FastMM.Runtime.Templates;

internal enum TokKind { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Op, Eof }

internal readonly record struct Token(TokKind Kind, string Text, int Line, object? Value = null)
{
    public bool Is(TokKind kind, string text) => Kind == kind && Text == text;
    public bool IsOp(string op) => Kind == TokKind.Op && Text == op;
    public bool IsName(string name) => Kind == TokKind.Name && Text == name;
}

/// <summary>
/// Splits a template into tokens the way jinja2's lexer does with trim_blocks=True and lstrip_blocks=True:
/// "-" strips all whitespace on that side, "+" keeps it, a block or comment tag eats the one newline after it,
/// and spaces/tabs between a line start and a block or comment tag are dropped.
/// </summary>
internal sealed class TemplateLexer
{
    private static readonly string[] Operators =
        ["//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"];

    private readonly string _src;
    private readonly string _name;
    private readonly List<Token> _tokens = [];
    private int _pos;
    private int _line = 1;

    private TemplateLexer(string source, string name)
    {
        // jinja2 normalises \r\n and \r to \n and drops one trailing newline (keep_trailing_newline=False).
        source = source.Replace("\r\n", "\n").Replace('\r', '\n');
        if (source.EndsWith('\n')) source = source[..^1];
        _src = source;
        _name = name;
    }

    public static List<Token> Tokenize(string source, string name)
    {
        var lexer = new TemplateLexer(source, name);
        lexer.Run();
        return lexer._tokens;
    }

    private ChatTemplateException Error(string message, int? line = null) => new(_name, line ?? _line, message);

    private void Run()
    {
        bool lineStarting = true;
        while (_pos < _src.Length)
        {
            int tag = FindTagStart(_pos);
            if (tag < 0)
            {
                Emit(TokKind.Data, _src[_pos..], _line);
                break;
            }
            string text = _src[_pos..tag];
            char kind = _src[tag + 1];
            int p = tag + 2;
            char sign = p < _src.Length && (_src[p] == '-' || _src[p] == '+') ? _src[p] : '\0';
            if (sign != '\0') p++;

            if (sign == '-')
                text = RStrip(text);
            else if (sign != '+' && kind != '{')
            {
                // lstrip_blocks: only spaces/tabs between the line start and a block/comment tag go.
                int lpos = text.LastIndexOf('\n') + 1;
                if ((lpos > 0 || lineStarting) && text.AsSpan(lpos).IndexOfAnyExcept(' ', '\t') < 0)
                    text = text[..lpos];
            }
            int textLine = _line;
            _line += CountNewlines(_pos, tag);
            if (text.Length > 0) Emit(TokKind.Data, text, textLine);

            if (kind == '#') { _pos = p; lineStarting = SkipComment(); continue; }
            if (kind == '%' && IsRawTag(p)) throw Error("'raw' blocks are not supported");
            _pos = p;
            lineStarting = LexTag(kind == '%');
        }
        Emit(TokKind.Eof, "", _line);
    }

    private void Emit(TokKind kind, string text, int line, object? value = null) => _tokens.Add(new Token(kind, text, line, value));

    private int CountNewlines(int from, int to)
    {
        int n = 0;
        for (int i = from; i < to; i++) if (_src[i] == '\n') n++;
        return n;
    }

    private int FindTagStart(int from)
    {
        for (int i = _src.IndexOf('{', from); i >= 0 && i + 1 < _src.Length; i = _src.IndexOf('{', i + 1))
        {
            char c = _src[i + 1];
            if (c == '{' || c == '%' || c == '#') return i;
        }
        return -1;
    }

    private static string RStrip(string s)
    {
        int end = s.Length;
        while (end > 0 && Py.IsSpace(s[end - 1])) end--;
        return s[..end];
    }

    private bool IsRawTag(int p)
    {
        while (p < _src.Length && Py.IsSpace(_src[p])) p++;
        return string.CompareOrdinal(_src, p, "raw", 0, 3) == 0 && (p + 3 >= _src.Length || !IsNameChar(_src[p + 3]));
    }

    /// <summary>Skips to the end of a comment; returns whether the consumed text ended with a newline.</summary>
    private bool SkipComment()
    {
        int start = _line;
        int end = _src.IndexOf("#}", _pos, StringComparison.Ordinal);
        if (end < 0) throw Error("missing end of comment tag '#}'", start);
        char sign = end - 1 >= _pos && (_src[end - 1] == '-' || _src[end - 1] == '+') ? _src[end - 1] : '\0';
        _line += CountNewlines(_pos, end);
        _pos = end + 2;
        return AfterTagEnd(sign, trimNewline: true);
    }

    /// <summary>Applies what follows a closing delimiter ("-" strips whitespace, plain block ends eat one newline).</summary>
    private bool AfterTagEnd(char sign, bool trimNewline)
    {
        bool endsWithNewline = false;
        if (sign == '-')
        {
            while (_pos < _src.Length && Py.IsSpace(_src[_pos]))
            {
                endsWithNewline = _src[_pos] == '\n';
                if (endsWithNewline) _line++;
                _pos++;
            }
        }
        else if (sign != '+' && trimNewline && _pos < _src.Length && _src[_pos] == '\n')
        {
            _pos++;
            _line++;
            endsWithNewline = true;
        }
        return endsWithNewline;
    }

    /// <summary>Lexes the inside of {% %} or {{ }} up to and including its end; returns the line-starting flag.</summary>
    private bool LexTag(bool block)
    {
        int startLine = _line;
        Emit(block ? TokKind.BlockBegin : TokKind.VarBegin, "", _line);
        var brackets = new Stack<char>();
        while (true)
        {
            if (_pos >= _src.Length)
                throw Error(block ? "unexpected end of template: '{%' tag is not closed with '%}'" : "unexpected end of template: '{{' is not closed with '}}'", startLine);
            // End delimiters count only while brackets are balanced, as in jinja2.
            if (brackets.Count == 0)
            {
                string end = block ? "%}" : "}}";
                char sign = '\0';
                int at = -1;
                if ((_src[_pos] == '-' || (block && _src[_pos] == '+')) && string.CompareOrdinal(_src, _pos + 1, end, 0, 2) == 0) { sign = _src[_pos]; at = _pos + 1; }
                else if (string.CompareOrdinal(_src, _pos, end, 0, 2) == 0) at = _pos;
                if (at >= 0)
                {
                    Emit(block ? TokKind.BlockEnd : TokKind.VarEnd, "", _line);
                    _pos = at + 2;
                    return AfterTagEnd(sign, trimNewline: block);
                }
            }
            char c = _src[_pos];
            if (Py.IsSpace(c))
            {
                if (c == '\n') _line++;
                _pos++;
                continue;
            }
            if (char.IsAsciiDigit(c)) { LexNumber(); continue; }
            if (char.IsLetter(c) || c == '_')
            {
                int s = _pos;
                while (_pos < _src.Length && IsNameChar(_src[_pos])) _pos++;
                Emit(TokKind.Name, _src[s.._pos], _line);
                continue;
            }
            if (c == '\'' || c == '"') { LexString(c); continue; }
            string? op = Operators.FirstOrDefault(o => string.CompareOrdinal(_src, _pos, o, 0, o.Length) == 0);
            if (op is null) throw Error($"unexpected character '{c}'");
            if (op is "(" or "[" or "{") brackets.Push(op[0]);
            else if (op is ")" or "]" or "}")
            {
                char open = op == ")" ? '(' : op == "]" ? '[' : '{';
                if (brackets.Count == 0) throw Error($"unexpected '{op}'");
                char got = brackets.Pop();
                if (got != open) throw Error($"unexpected '{op}', expected '{(got == '(' ? ')' : got == '[' ? ']' : '}')}'");
            }
            Emit(TokKind.Op, op, _line);
            _pos += op.Length;
        }
    }

    private static bool IsNameChar(char c) => char.IsLetterOrDigit(c) || c == '_';

    private void LexNumber()
    {
        int s = _pos;
        if (_src[_pos] == '0' && _pos + 1 < _src.Length && "xXoObB".Contains(_src[_pos + 1]))
        {
            int radix = char.ToLowerInvariant(_src[_pos + 1]) switch { 'x' => 16, 'o' => 8, _ => 2 };
            _pos += 2;
            int ds = _pos;
            while (_pos < _src.Length && (Uri.IsHexDigit(_src[_pos]) || _src[_pos] == '_')) _pos++;
            string digits = _src[ds.._pos].Replace("_", "");
            try { Emit(TokKind.Integer, _src[s.._pos], _line, Convert.ToInt64(digits, radix)); }
            catch (Exception e) when (e is FormatException or OverflowException or ArgumentException) { throw Error($"invalid number '{_src[s.._pos]}'"); }
            return;
        }
        ScanDigits();
        bool isFloat = false;
        if (_pos + 1 < _src.Length && _src[_pos] == '.' && char.IsAsciiDigit(_src[_pos + 1])) { _pos++; ScanDigits(); isFloat = true; }
        if (_pos < _src.Length && (_src[_pos] == 'e' || _src[_pos] == 'E'))
        {
            int save = _pos;
            _pos++;
            if (_pos < _src.Length && (_src[_pos] == '+' || _src[_pos] == '-')) _pos++;
            if (_pos < _src.Length && char.IsAsciiDigit(_src[_pos])) { ScanDigits(); isFloat = true; }
            else _pos = save;
        }
        string text = _src[s.._pos].Replace("_", "");
        if (isFloat) Emit(TokKind.Float, text, _line, double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture));
        else if (long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long v)) Emit(TokKind.Integer, text, _line, v);
        else throw Error($"integer literal '{text}' is too large");
    }

    private void ScanDigits()
    {
        while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) || (_src[_pos] == '_' && _pos + 1 < _src.Length && char.IsAsciiDigit(_src[_pos + 1])))) _pos++;
    }

    /// <summary>A quoted literal, unescaped like Python's "unicode-escape" codec (which jinja2 uses).</summary>
    private void LexString(char quote)
    {
        int line = _line;
        var sb = new StringBuilder();
        _pos++;
        while (true)
        {
            if (_pos >= _src.Length) throw Error("unterminated string literal", line);
            char c = _src[_pos++];
            if (c == quote) break;
            if (c == '\n') _line++;
            if (c != '\\') { sb.Append(c); continue; }
            if (_pos >= _src.Length) throw Error("unterminated string literal", line);
            char e = _src[_pos++];
            switch (e)
            {
                case '\n': _line++; break; // line continuation
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case 'v': sb.Append('\v'); break;
                case 'x': sb.Append((char)ReadHex(2)); break;
                case 'u': sb.Append((char)ReadHex(4)); break;
                case 'U':
                    int cp = ReadHex(8);
                    if (cp > 0x10FFFF) throw Error("invalid \\U escape in string literal");
                    sb.Append(char.ConvertFromUtf32(cp));
                    break;
                case >= '0' and <= '7':
                    int v = e - '0';
                    for (int k = 0; k < 2 && _pos < _src.Length && _src[_pos] is >= '0' and <= '7'; k++) v = v * 8 + (_src[_pos++] - '0');
                    sb.Append((char)v);
                    break;
                case 'N': throw Error("\\N{...} escapes are not supported");
                default: sb.Append('\\').Append(e); break; // Python keeps unknown escapes verbatim
            }
        }
        Emit(TokKind.String, sb.ToString(), line, sb.ToString());
    }

    private int ReadHex(int count)
    {
        if (_pos + count > _src.Length) throw Error("truncated escape in string literal");
        string hex = _src.Substring(_pos, count);
        if (!int.TryParse(hex, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int v) || hex.Any(ch => !Uri.IsHexDigit(ch)))
            throw Error("truncated escape in string literal");
        _pos += count;
        return v;
    }
}
