namespace FastMM.Runtime.Templates;

// The parsed template: statements (Node) and expressions (Expr), each with the line it starts on.

internal abstract record Node(int Line);
internal sealed record TextNode(int Line, string Text) : Node(Line);
internal sealed record OutputNode(int Line, Expr Value) : Node(Line);
internal sealed record IfNode(int Line, List<(Expr Test, List<Node> Body)> Branches, List<Node>? Else) : Node(Line);
internal sealed record ForNode(int Line, Target Target, Expr Iter, Expr? Filter, List<Node> Body, List<Node>? Else) : Node(Line);
internal sealed record SetNode(int Line, Target Target, Expr Value) : Node(Line);
internal sealed record SetBlockNode(int Line, Target Target, List<Node> Body, List<FilterExpr> Filters) : Node(Line);
internal sealed record MacroNode(int Line, string Name, List<Parameter> Parameters, List<Node> Body) : Node(Line);
internal sealed record CallBlockNode(int Line, CallExpr Call, List<Parameter> Parameters, List<Node> Body) : Node(Line);
internal sealed record FilterBlockNode(int Line, List<FilterExpr> Filters, List<Node> Body) : Node(Line);
internal sealed record BreakNode(int Line) : Node(Line);
internal sealed record ContinueNode(int Line) : Node(Line);

internal sealed record Parameter(string Name, Expr? Default);

/// <summary>Left side of set/for: a name, a tuple of targets, or namespace attribute (ns.attr).</summary>
internal abstract record Target(int Line);
internal sealed record NameTarget(int Line, string Name) : Target(Line);
internal sealed record TupleTarget(int Line, List<Target> Items) : Target(Line);
internal sealed record AttrTarget(int Line, string Object, string Attribute) : Target(Line);

internal abstract record Expr(int Line);
internal sealed record ConstExpr(int Line, object? Value) : Expr(Line);
internal sealed record NameExpr(int Line, string Name) : Expr(Line);
internal sealed record ListExpr(int Line, List<Expr> Items) : Expr(Line);
internal sealed record TupleExpr(int Line, List<Expr> Items) : Expr(Line);
internal sealed record DictExpr(int Line, List<(Expr Key, Expr Value)> Items) : Expr(Line);
internal sealed record AttrExpr(int Line, Expr Object, string Attribute) : Expr(Line);
internal sealed record ItemExpr(int Line, Expr Object, Expr Key) : Expr(Line);
internal sealed record SliceExpr(int Line, Expr Object, Expr? Start, Expr? Stop, Expr? Step) : Expr(Line);
internal sealed record CallExpr(int Line, Expr Callee, List<Expr> Args, List<(string Name, Expr Value)> Kwargs) : Expr(Line);
/// <summary>value | name(args); Value is null inside {% filter %} and set-block filter chains.</summary>
internal sealed record FilterExpr(int Line, Expr? Value, string Name, List<Expr> Args, List<(string Name, Expr Value)> Kwargs) : Expr(Line);
internal sealed record TestExpr(int Line, Expr Value, string Name, List<Expr> Args, bool Negated) : Expr(Line);
internal sealed record UnaryExpr(int Line, string Op, Expr Operand) : Expr(Line);
internal sealed record BinaryExpr(int Line, string Op, Expr Left, Expr Right) : Expr(Line);
internal sealed record CompareExpr(int Line, Expr First, List<(string Op, Expr Operand)> Rest) : Expr(Line);
internal sealed record CondExpr(int Line, Expr Test, Expr Then, Expr? Else) : Expr(Line);
