namespace FastMM.Runtime.Templates;

/// <summary>
/// Recursive-descent parser following jinja2's grammar and operator precedence
/// (condexpr &lt; or &lt; and &lt; not &lt; compare &lt; +,- &lt; ~ &lt; *,/,//,% &lt; ** &lt; unary &lt; filters/tests &lt; postfix).
/// Anything outside the supported subset fails here, naming the construct and line.
/// </summary>
internal sealed class TemplateParser
{
    /// <summary>Deeper nesting (brackets, blocks) is rejected instead of risking a stack overflow.</summary>
    public const int MaxNesting = 100;

    private static readonly HashSet<string> UnsupportedTags =
        ["block", "extends", "include", "import", "from", "with", "autoescape", "do", "trans", "pluralize", "endtrans", "raw", "debug"];
    private static readonly HashSet<string> UnsupportedGlobals = ["lipsum", "cycler", "joiner"];

    private readonly List<Token> _t;
    private readonly string _name;
    private int _i;
    private int _depth;
    private int _loopDepth;

    private TemplateParser(List<Token> tokens, string name) { _t = tokens; _name = name; }

    public static List<Node> Parse(string source, string name)
    {
        var parser = new TemplateParser(TemplateLexer.Tokenize(source, name), name);
        var body = parser.ParseBody([]);
        return body;
    }

    private Token Cur => _t[_i];
    private Token Peek(int k = 1) => _t[Math.Min(_i + k, _t.Count - 1)];
    private Token Next() => _t[_i++];

    private ChatTemplateException Error(string message, int? line = null) => new(_name, line ?? Cur.Line, message);

    private static string Describe(Token t) => t.Kind switch
    {
        TokKind.Eof => "end of template",
        TokKind.BlockEnd => "'%}'",
        TokKind.VarEnd => "'}}'",
        TokKind.String => $"string '{t.Text}'",
        TokKind.Data => "template text",
        _ => $"'{t.Text}'",
    };

    private void ExpectOp(string op)
    {
        if (!Cur.IsOp(op)) throw Error($"expected '{op}', got {Describe(Cur)}");
        _i++;
    }

    private string ExpectName()
    {
        if (Cur.Kind != TokKind.Name) throw Error($"expected a name, got {Describe(Cur)}");
        return Next().Text;
    }

    private void ExpectBlockEnd(string tag)
    {
        if (Cur.Kind != TokKind.BlockEnd) throw Error($"unexpected {Describe(Cur)} in '{tag}' tag, expected '%}}'");
        _i++;
    }

    private void Enter()
    {
        if (++_depth > MaxNesting) throw Error($"template is nested too deeply (more than {MaxNesting} levels)");
    }

    /// <summary>Parses nodes until a block tag named in <paramref name="endTags"/> (left unconsumed) or the end.</summary>
    private List<Node> ParseBody(string[] endTags, string? openTag = null, int openLine = 0)
    {
        var body = new List<Node>();
        while (true)
        {
            var tok = Cur;
            switch (tok.Kind)
            {
                case TokKind.Eof:
                    if (endTags.Length > 0)
                        throw Error($"unexpected end of template: '{openTag}' tag opened on line {openLine} is not closed (expected {string.Join(" or ", endTags.Select(t => $"'{t}'"))})");
                    return body;
                case TokKind.Data:
                    _i++;
                    body.Add(new TextNode(tok.Line, tok.Text));
                    break;
                case TokKind.VarBegin:
                    _i++;
                    var value = ParseTuple();
                    if (Cur.Kind != TokKind.VarEnd) throw Error($"unexpected {Describe(Cur)} in '{{{{ }}}}', expected '}}}}'");
                    _i++;
                    body.Add(new OutputNode(tok.Line, value));
                    break;
                case TokKind.BlockBegin:
                    var nameTok = Peek();
                    if (nameTok.Kind != TokKind.Name) throw Error($"expected a tag name after '{{%', got {Describe(nameTok)}", nameTok.Line);
                    if (endTags.Contains(nameTok.Text)) return body;
                    _i += 2;
                    body.Add(ParseStatement(nameTok));
                    break;
                default:
                    throw Error($"unexpected {Describe(tok)}");
            }
        }
    }

    private Node ParseStatement(Token tag)
    {
        Enter();
        try
        {
            switch (tag.Text)
            {
                case "if": return ParseIf(tag.Line);
                case "for": return ParseFor(tag.Line);
                case "set": return ParseSet(tag.Line);
                case "macro": return ParseMacro(tag.Line);
                case "call": return ParseCallBlock(tag.Line);
                case "filter": return ParseFilterBlock(tag.Line);
                case "generation":
                {
                    // transformers' AssistantTracker tag: renders its body unchanged (it only records offsets).
                    ExpectBlockEnd("generation");
                    var body = ParseBody(["endgeneration"], "generation", tag.Line);
                    EndTag("endgeneration");
                    return new IfNode(tag.Line, [(new ConstExpr(tag.Line, true), body)], null);
                }
                case "break" or "continue":
                    if (_loopDepth == 0) throw Error($"'{tag.Text}' outside of a for loop", tag.Line);
                    ExpectBlockEnd(tag.Text);
                    return tag.Text == "break" ? new BreakNode(tag.Line) : new ContinueNode(tag.Line);
                default:
                    if (UnsupportedTags.Contains(tag.Text)) throw Error($"tag '{tag.Text}' is not supported", tag.Line);
                    if (tag.Text is "else" or "elif" || tag.Text.StartsWith("end", StringComparison.Ordinal))
                        throw Error($"unexpected tag '{tag.Text}' (no open block it could close)", tag.Line);
                    throw Error($"unknown tag '{tag.Text}'", tag.Line);
            }
        }
        finally { _depth--; }
    }

    private void EndTag(string name)
    {
        _i += 2; // BlockBegin + name, already checked by ParseBody
        ExpectBlockEnd(name);
    }

    private Node ParseIf(int line)
    {
        var branches = new List<(Expr, List<Node>)>();
        List<Node>? elseBody = null;
        var test = ParseTuple(withCondExpr: false);
        ExpectBlockEnd("if");
        while (true)
        {
            var body = ParseBody(["elif", "else", "endif"], "if", line);
            branches.Add((test, body));
            string tag = Peek().Text;
            _i += 2;
            if (tag == "elif")
            {
                test = ParseTuple(withCondExpr: false);
                ExpectBlockEnd("elif");
                continue;
            }
            if (tag == "else")
            {
                ExpectBlockEnd("else");
                elseBody = ParseBody(["endif"], "if", line);
                EndTag("endif");
            }
            else ExpectBlockEnd("endif");
            return new IfNode(line, branches, elseBody);
        }
    }

    private Node ParseFor(int line)
    {
        var target = ParseAssignTarget(allowNamespace: false, "in");
        if (!Cur.IsName("in")) throw Error($"expected 'in' in for loop, got {Describe(Cur)}");
        _i++;
        var iter = ParseTuple(withCondExpr: false, "recursive", "if");
        Expr? filter = null;
        if (Cur.IsName("if")) { _i++; filter = ParseExpression(); }
        if (Cur.IsName("recursive")) throw Error("recursive for loops are not supported");
        ExpectBlockEnd("for");
        _loopDepth++;
        var body = ParseBody(["else", "endfor"], "for", line);
        _loopDepth--;
        List<Node>? elseBody = null;
        if (Peek().Text == "else")
        {
            _i += 2;
            ExpectBlockEnd("else");
            elseBody = ParseBody(["endfor"], "for", line);
        }
        EndTag("endfor");
        return new ForNode(line, target, iter, filter, body, elseBody);
    }

    private Node ParseSet(int line)
    {
        var target = ParseAssignTarget(allowNamespace: true);
        if (Cur.IsOp("="))
        {
            _i++;
            var value = ParseTuple();
            ExpectBlockEnd("set");
            return new SetNode(line, target, value);
        }
        var filters = new List<FilterExpr>();
        while (Cur.IsOp("|")) { _i++; filters.Add(ParseFilterCall(null)); }
        ExpectBlockEnd("set");
        int saved = _loopDepth;
        var body = ParseBody(["endset"], "set", line);
        _loopDepth = saved;
        EndTag("endset");
        return new SetBlockNode(line, target, body, filters);
    }

    private List<Parameter> ParseParameters()
    {
        var ps = new List<Parameter>();
        ExpectOp("(");
        while (!Cur.IsOp(")"))
        {
            if (ps.Count > 0) ExpectOp(",");
            if (Cur.IsOp(")")) break;
            string name = ExpectName();
            Expr? def = null;
            if (Cur.IsOp("=")) { _i++; def = ParseExpression(); }
            else if (ps.Count > 0 && ps[^1].Default is not null) throw Error($"parameter '{name}' without a default follows one with a default");
            ps.Add(new Parameter(name, def));
        }
        _i++;
        return ps;
    }

    private Node ParseMacro(int line)
    {
        string name = ExpectName();
        var ps = ParseParameters();
        ExpectBlockEnd("macro");
        int saved = _loopDepth;
        _loopDepth = 0;
        var body = ParseBody(["endmacro"], "macro", line);
        _loopDepth = saved;
        EndTag("endmacro");
        return new MacroNode(line, name, ps, body);
    }

    private Node ParseCallBlock(int line)
    {
        var ps = Cur.IsOp("(") ? ParseParameters() : [];
        var call = ParseExpression();
        if (call is not CallExpr ce) throw Error("expected a macro call in 'call' tag", line);
        ExpectBlockEnd("call");
        int saved = _loopDepth;
        _loopDepth = 0;
        var body = ParseBody(["endcall"], "call", line);
        _loopDepth = saved;
        EndTag("endcall");
        return new CallBlockNode(line, ce, ps, body);
    }

    private Node ParseFilterBlock(int line)
    {
        var filters = new List<FilterExpr> { ParseFilterCall(null) };
        while (Cur.IsOp("|")) { _i++; filters.Add(ParseFilterCall(null)); }
        ExpectBlockEnd("filter");
        var body = ParseBody(["endfilter"], "filter", line);
        EndTag("endfilter");
        return new FilterBlockNode(line, filters, body);
    }

    private Target ParseAssignTarget(bool allowNamespace, params string[] extraEnd)
    {
        int line = Cur.Line;
        var items = new List<Target>();
        bool tuple = false;
        bool paren = Cur.IsOp("(");
        if (paren) _i++;
        while (true)
        {
            string name = ExpectName();
            if (allowNamespace && Cur.IsOp("."))
            {
                _i++;
                items.Add(new AttrTarget(line, name, ExpectName()));
            }
            else
            {
                if (name is "true" or "false" or "none" or "True" or "False" or "None") throw Error($"cannot assign to '{name}'");
                items.Add(new NameTarget(line, name));
            }
            if (!Cur.IsOp(",")) break;
            tuple = true;
            _i++;
            if ((paren && Cur.IsOp(")")) || Cur.Kind == TokKind.BlockEnd || extraEnd.Any(Cur.IsName) || Cur.IsOp("=")) break;
        }
        if (paren) ExpectOp(")");
        return tuple || paren && items.Count > 1 ? new TupleTarget(line, items) : items[0];
    }

    // ---- expressions ----

    private bool IsTupleEnd(string[] extraEnd) =>
        Cur.Kind is TokKind.VarEnd or TokKind.BlockEnd or TokKind.Eof || Cur.IsOp(")") || extraEnd.Any(Cur.IsName);

    /// <summary>jinja2's parse_tuple: "a, b" makes a tuple; a lone expression stays itself.</summary>
    private Expr ParseTuple(bool withCondExpr = true, params string[] extraEnd)
    {
        int line = Cur.Line;
        var items = new List<Expr>();
        bool comma = false;
        while (true)
        {
            if (items.Count > 0) ExpectOp(",");
            if (items.Count > 0 && IsTupleEnd(extraEnd)) break;
            items.Add(withCondExpr ? ParseExpression() : ParseOr());
            if (Cur.IsOp(",")) comma = true;
            else break;
        }
        if (!comma) return items[0];
        return new TupleExpr(line, items);
    }

    private Expr ParseExpression()
    {
        Enter();
        try
        {
            var expr = ParseOr();
            while (Cur.IsName("if"))
            {
                int line = Next().Line;
                var test = ParseOr();
                Expr? otherwise = null;
                if (Cur.IsName("else")) { _i++; otherwise = ParseExpression(); }
                expr = new CondExpr(line, test, expr, otherwise);
            }
            return expr;
        }
        finally { _depth--; }
    }

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (Cur.IsName("or")) { int line = Next().Line; left = new BinaryExpr(line, "or", left, ParseAnd()); }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (Cur.IsName("and")) { int line = Next().Line; left = new BinaryExpr(line, "and", left, ParseNot()); }
        return left;
    }

    private Expr ParseNot()
    {
        if (Cur.IsName("not"))
        {
            int line = Next().Line;
            Enter();
            try { return new UnaryExpr(line, "not", ParseNot()); }
            finally { _depth--; }
        }
        return ParseCompare();
    }

    private Expr ParseCompare()
    {
        int line = Cur.Line;
        var first = ParseMath1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            if (Cur.Kind == TokKind.Op && Cur.Text is "==" or "!=" or "<" or ">" or "<=" or ">=")
            {
                string op = Next().Text;
                rest.Add((op, ParseMath1()));
            }
            else if (Cur.IsName("in")) { _i++; rest.Add(("in", ParseMath1())); }
            else if (Cur.IsName("not") && Peek().IsName("in")) { _i += 2; rest.Add(("notin", ParseMath1())); }
            else break;
        }
        return rest.Count == 0 ? first : new CompareExpr(line, first, rest);
    }

    private Expr ParseMath1()
    {
        var left = ParseConcat();
        while (Cur.IsOp("+") || Cur.IsOp("-")) { var t = Next(); left = new BinaryExpr(t.Line, t.Text, left, ParseConcat()); }
        return left;
    }

    private Expr ParseConcat()
    {
        var left = ParseMath2();
        while (Cur.IsOp("~")) { var t = Next(); left = new BinaryExpr(t.Line, "~", left, ParseMath2()); }
        return left;
    }

    private Expr ParseMath2()
    {
        var left = ParsePow();
        while (Cur.Kind == TokKind.Op && Cur.Text is "*" or "/" or "//" or "%") { var t = Next(); left = new BinaryExpr(t.Line, t.Text, left, ParsePow()); }
        return left;
    }

    private Expr ParsePow()
    {
        var left = ParseUnary(true);
        while (Cur.IsOp("**")) { var t = Next(); left = new BinaryExpr(t.Line, "**", left, ParseUnary(true)); }
        return left;
    }

    private Expr ParseUnary(bool withFilter)
    {
        Enter();
        try
        {
            Expr node;
            if (Cur.IsOp("-") || Cur.IsOp("+"))
            {
                var t = Next();
                node = new UnaryExpr(t.Line, t.Text, ParseUnary(false));
            }
            else node = ParsePrimary();
            node = ParsePostfix(node);
            if (withFilter) node = ParseFilterExpr(node);
            return node;
        }
        finally { _depth--; }
    }

    private Expr ParsePrimary()
    {
        var t = Cur;
        switch (t.Kind)
        {
            case TokKind.Name:
                _i++;
                return t.Text switch
                {
                    "true" or "True" => new ConstExpr(t.Line, true),
                    "false" or "False" => new ConstExpr(t.Line, false),
                    "none" or "None" => new ConstExpr(t.Line, null),
                    _ when UnsupportedGlobals.Contains(t.Text) && Cur.IsOp("(") => throw Error($"global function '{t.Text}' is not supported", t.Line),
                    _ => new NameExpr(t.Line, t.Text),
                };
            case TokKind.String:
                _i++;
                string s = t.Text;
                while (Cur.Kind == TokKind.String) s += Next().Text; // adjacent literals concatenate
                return new ConstExpr(t.Line, s);
            case TokKind.Integer or TokKind.Float:
                _i++;
                return new ConstExpr(t.Line, t.Value);
            case TokKind.Op when t.Text == "(":
            {
                _i++;
                if (Cur.IsOp(")")) { _i++; return new TupleExpr(t.Line, []); }
                var items = new List<Expr>();
                bool comma = false;
                while (true)
                {
                    items.Add(ParseExpression());
                    if (Cur.IsOp(",")) { _i++; comma = true; if (Cur.IsOp(")")) break; }
                    else break;
                }
                ExpectOp(")");
                return comma ? new TupleExpr(t.Line, items) : items[0];
            }
            case TokKind.Op when t.Text == "[":
            {
                _i++;
                var items = new List<Expr>();
                while (!Cur.IsOp("]"))
                {
                    if (items.Count > 0) { ExpectOp(","); if (Cur.IsOp("]")) break; }
                    items.Add(ParseExpression());
                }
                _i++;
                return new ListExpr(t.Line, items);
            }
            case TokKind.Op when t.Text == "{":
            {
                _i++;
                var items = new List<(Expr, Expr)>();
                while (!Cur.IsOp("}"))
                {
                    if (items.Count > 0) { ExpectOp(","); if (Cur.IsOp("}")) break; }
                    var key = ParseExpression();
                    ExpectOp(":");
                    items.Add((key, ParseExpression()));
                }
                _i++;
                return new DictExpr(t.Line, items);
            }
            default:
                throw Error($"unexpected {Describe(t)} in expression");
        }
    }

    private Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            var t = Cur;
            if (t.IsOp("."))
            {
                _i++;
                var attr = Next();
                if (attr.Kind == TokKind.Name) node = new AttrExpr(t.Line, node, attr.Text);
                else if (attr.Kind == TokKind.Integer) node = new ItemExpr(t.Line, node, new ConstExpr(t.Line, attr.Value));
                else throw Error($"expected an attribute name after '.', got {Describe(attr)}", attr.Line);
            }
            else if (t.IsOp("["))
            {
                _i++;
                node = ParseSubscript(node, t.Line);
            }
            else if (t.IsOp("(")) node = ParseCall(node);
            else return node;
        }
    }

    private Expr ParseSubscript(Expr node, int line)
    {
        Expr? ParsePart() => Cur.IsOp(":") || Cur.IsOp("]") ? null : ParseExpression();
        var start = ParsePart();
        if (!Cur.IsOp(":"))
        {
            if (start is null) throw Error("empty subscript");
            if (Cur.IsOp(","))
            {
                var items = new List<Expr> { start };
                while (Cur.IsOp(",")) { _i++; if (Cur.IsOp("]")) break; items.Add(ParseExpression()); }
                start = new TupleExpr(line, items);
            }
            ExpectOp("]");
            return new ItemExpr(line, node, start);
        }
        _i++;
        var stop = ParsePart();
        Expr? step = null;
        if (Cur.IsOp(":")) { _i++; step = ParsePart(); }
        ExpectOp("]");
        return new SliceExpr(line, node, start, stop, step);
    }

    private (List<Expr>, List<(string, Expr)>) ParseCallArgs()
    {
        ExpectOp("(");
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!Cur.IsOp(")"))
        {
            if (args.Count + kwargs.Count > 0) { ExpectOp(","); if (Cur.IsOp(")")) break; }
            if (Cur.IsOp("*") || Cur.IsOp("**")) throw Error("*args and **kwargs in calls are not supported");
            if (Cur.Kind == TokKind.Name && Peek().IsOp("="))
            {
                string name = Next().Text;
                _i++;
                kwargs.Add((name, ParseExpression()));
            }
            else
            {
                if (kwargs.Count > 0) throw Error("positional argument follows keyword argument");
                args.Add(ParseExpression());
            }
        }
        _i++;
        return (args, kwargs);
    }

    private Expr ParseCall(Expr callee)
    {
        int line = Cur.Line;
        var (args, kwargs) = ParseCallArgs();
        return new CallExpr(line, callee, args, kwargs);
    }

    private Expr ParseFilterExpr(Expr node)
    {
        while (true)
        {
            if (Cur.IsOp("|")) { _i++; node = ParseFilterCall(node); }
            else if (Cur.IsName("is")) node = ParseTest(node);
            else if (Cur.IsOp("(")) node = ParseCall(node);
            else return node;
        }
    }

    private FilterExpr ParseFilterCall(Expr? value)
    {
        int line = Cur.Line;
        string name = ExpectName();
        if (!Builtins.Filters.ContainsKey(name)) throw Error($"filter '{name}' is not supported", line);
        List<Expr> args = [];
        List<(string, Expr)> kwargs = [];
        if (Cur.IsOp("(")) (args, kwargs) = ParseCallArgs();
        return new FilterExpr(line, value, name, args, kwargs);
    }

    private Expr ParseTest(Expr value)
    {
        int line = Next().Line; // 'is'
        bool negated = false;
        if (Cur.IsName("not")) { _i++; negated = true; }
        string name = ExpectName();
        if (!Builtins.Tests.ContainsKey(name)) throw Error($"test '{name}' is not supported", line);
        var args = new List<Expr>();
        if (Cur.IsOp("("))
        {
            var (a, kw) = ParseCallArgs();
            if (kw.Count > 0) throw Error($"keyword arguments to test '{name}' are not supported", line);
            args = a;
        }
        else if ((Cur.Kind is TokKind.Name or TokKind.String or TokKind.Integer or TokKind.Float || Cur.IsOp("(") || Cur.IsOp("[") || Cur.IsOp("{"))
                 && !Cur.IsName("else") && !Cur.IsName("or") && !Cur.IsName("and"))
        {
            if (Cur.IsName("is")) throw Error("tests cannot be chained with 'is'");
            args.Add(ParsePostfix(ParsePrimary()));
        }
        return new TestExpr(line, value, name, args, negated);
    }
}
