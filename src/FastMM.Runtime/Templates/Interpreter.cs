using System.Text;

namespace FastMM.Runtime.Templates;

/// <summary>Variables visible at one level: the template root, one for-loop iteration, one macro call.</summary>
internal sealed class Scope(Scope? parent)
{
    private readonly Dictionary<string, object?> _vars = new(StringComparer.Ordinal);
    public Scope? Parent { get; } = parent;

    public bool TryGet(string name, out object? value)
    {
        for (var s = this; s is not null; s = s.Parent)
            if (s._vars.TryGetValue(name, out value)) return true;
        value = null;
        return false;
    }

    public void Set(string name, object? value) => _vars[name] = value;
}

/// <summary>jinja2's loop variable inside {% for %}.</summary>
internal sealed class LoopContext(List<object?> items)
{
    public int Index0 { get; set; }
    public int Length => items.Count;

    public object? Get(string name) => name switch
    {
        "index" => (long)Index0 + 1,
        "index0" => (long)Index0,
        "revindex" => (long)(Length - Index0),
        "revindex0" => (long)(Length - Index0 - 1),
        "first" => Index0 == 0,
        "last" => Index0 == Length - 1,
        "length" => (long)Length,
        "depth" => 1L,
        "depth0" => 0L,
        "previtem" => Index0 > 0 ? items[Index0 - 1] : new Undefined("there is no previous item"),
        "nextitem" => Index0 < Length - 1 ? items[Index0 + 1] : new Undefined("there is no next item"),
        "cycle" => new BoundMethod(this, "cycle"),
        _ => new Undefined($"'LoopContext' object has no attribute '{name}'"),
    };

    public object? Cycle(List<object?> args) =>
        args.Count == 0 ? throw new TemplateError("no items for cycling given") : args[Index0 % args.Count];
}

/// <summary>A {% macro %} (or the body of a {% call %} block, as caller()) bound to the scope it was defined in.</summary>
internal sealed class Macro(string name, List<Parameter> parameters, List<Node> body, Scope closure, Macro? caller) : PyCallable
{
    public override string Name => name;

    public override object? Invoke(Interpreter interp, List<object?> args, List<KeyValuePair<string, object?>> kwargs)
    {
        if (args.Count > parameters.Count) throw new TemplateError($"macro '{name}' takes not more than {parameters.Count} argument(s)");
        var scope = new Scope(closure);
        var given = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < args.Count; i++) { scope.Set(parameters[i].Name, args[i]); given.Add(parameters[i].Name); }
        foreach (var (key, value) in kwargs)
        {
            if (key == "caller" && caller is null) { scope.Set(key, value); continue; }
            if (!parameters.Any(p => p.Name == key)) throw new TemplateError($"macro '{name}' takes no keyword argument '{key}'");
            if (!given.Add(key)) throw new TemplateError($"macro '{name}' got multiple values for argument '{key}'");
            scope.Set(key, value);
        }
        foreach (var p in parameters)
        {
            if (given.Contains(p.Name)) continue;
            // Defaults are evaluated at call time in the macro's own scope, as jinja2 does.
            scope.Set(p.Name, p.Default is null ? new Undefined($"parameter '{p.Name}' was not provided") : interp.Eval(p.Default, scope));
        }
        if (caller is not null) scope.Set("caller", caller);
        return interp.Capture(body, scope, name);
    }
}

/// <summary>Evaluates a parsed template; one instance per render.</summary>
internal sealed class Interpreter
{
    /// <summary>Upper bound on rendered text (and on any string built while rendering), in UTF-16 units.</summary>
    public const int MaxOutputChars = 32 << 20;
    /// <summary>Upper bound on loop iterations plus macro calls, so hostile templates end.</summary>
    public const long MaxSteps = 5_000_000;
    public const int MaxCallDepth = 100;

    private enum Flow { Normal, Break, Continue }

    private readonly string _sourceName;
    private readonly IReadOnlyDictionary<string, object?> _globals;
    private StringBuilder _out = new();
    private long _steps;
    private int _callDepth;

    public TimeProvider Clock { get; }
    public int Line { get; private set; }

    public Interpreter(string sourceName, TimeProvider clock)
    {
        _sourceName = sourceName;
        Clock = clock;
        _globals = Builtins.Globals;
    }

    public string Render(List<Node> body, Scope root)
    {
        try
        {
            Exec(body, root);
            return _out.ToString();
        }
        catch (ChatTemplateException) { throw; }
        catch (TemplateRaised e) { throw new ChatTemplateException(_sourceName, Line, e.Message); }
        catch (TemplateError e) { throw new ChatTemplateException(_sourceName, Line, e.Message); }
        catch (Exception e) when (e is InvalidCastException or OverflowException or ArgumentException or FormatException or InvalidOperationException or IndexOutOfRangeException)
        {
            throw new ChatTemplateException(_sourceName, Line, e.Message);
        }
    }

    public void Step()
    {
        if (++_steps > MaxSteps) throw new TemplateError($"template exceeded {MaxSteps} loop iterations and macro calls");
    }

    public static string CheckSize(string s) =>
        s.Length > MaxOutputChars ? throw new TemplateError($"template output exceeds {MaxOutputChars} characters") : s;

    private void Write(string s)
    {
        _out.Append(s);
        if (_out.Length > MaxOutputChars) throw new TemplateError($"template output exceeds {MaxOutputChars} characters");
    }

    /// <summary>Renders nodes into a fresh buffer (macro bodies, set blocks, filter blocks) and returns the text.</summary>
    public string Capture(List<Node> body, Scope scope, string what)
    {
        if (++_callDepth > MaxCallDepth) throw new TemplateError($"recursion too deep in '{what}' (more than {MaxCallDepth} nested calls)");
        Step();
        var saved = _out;
        _out = new StringBuilder();
        try
        {
            Exec(body, scope);
            return _out.ToString();
        }
        finally
        {
            _out = saved;
            _callDepth--;
        }
    }

    private Flow Exec(List<Node> body, Scope scope)
    {
        foreach (var node in body)
        {
            var flow = Exec(node, scope);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    private Flow Exec(Node node, Scope scope)
    {
        Line = node.Line;
        switch (node)
        {
            case TextNode t: Write(t.Text); return Flow.Normal;
            case OutputNode o: Write(Py.Str(Eval(o.Value, scope))); return Flow.Normal;
            case IfNode n:
                foreach (var (test, branch) in n.Branches)
                    if (Py.Truthy(Eval(test, scope))) return Exec(branch, scope);
                return n.Else is null ? Flow.Normal : Exec(n.Else, scope);
            case ForNode f: return ExecFor(f, scope);
            case SetNode s: Assign(s.Target, Eval(s.Value, scope), scope); return Flow.Normal;
            case SetBlockNode sb:
            {
                object? value = Capture(sb.Body, scope, "set");
                foreach (var filter in sb.Filters) value = ApplyFilter(filter, value, scope);
                Assign(sb.Target, value, scope);
                return Flow.Normal;
            }
            case MacroNode m: scope.Set(m.Name, new Macro(m.Name, m.Parameters, m.Body, scope, null)); return Flow.Normal;
            case CallBlockNode c:
            {
                var caller = new Macro("caller", c.Parameters, c.Body, scope, null);
                var callee = Eval(c.Call.Callee, scope);
                var (args, kwargs) = EvalArgs(c.Call.Args, c.Call.Kwargs, scope);
                kwargs.Add(new("caller", caller));
                Line = node.Line;
                Write(Py.Str(Call(callee, args, kwargs)));
                return Flow.Normal;
            }
            case FilterBlockNode fb:
            {
                object? value = Capture(fb.Body, scope, "filter");
                foreach (var filter in fb.Filters) value = ApplyFilter(filter, value, scope);
                Write(Py.Str(value));
                return Flow.Normal;
            }
            case BreakNode: return Flow.Break;
            case ContinueNode: return Flow.Continue;
            default: throw new TemplateError($"unknown node {node.GetType().Name}");
        }
    }

    private Flow ExecFor(ForNode f, Scope scope)
    {
        var source = Eval(f.Iter, scope);
        if (source is null) throw new TemplateError("'NoneType' object is not iterable");
        var items = new List<object?>();
        foreach (var item in Py.Iterate(source))
        {
            if (f.Filter is not null)
            {
                // The loop filter sees the loop variable(s) but not 'loop'.
                var probe = new Scope(scope);
                Assign(f.Target, item, probe);
                if (!Py.Truthy(Eval(f.Filter, probe))) continue;
            }
            items.Add(item);
            Step();
        }
        if (items.Count == 0) return f.Else is null ? Flow.Normal : Exec(f.Else, scope);
        var loop = new LoopContext(items);
        for (int i = 0; i < items.Count; i++)
        {
            Step();
            loop.Index0 = i;
            // Each iteration gets a fresh scope: a {% set %} inside the body never outlives its iteration.
            var iterScope = new Scope(scope);
            iterScope.Set("loop", loop);
            Assign(f.Target, items[i], iterScope);
            if (Exec(f.Body, iterScope) == Flow.Break) break;
        }
        return Flow.Normal;
    }

    private void Assign(Target target, object? value, Scope scope)
    {
        switch (target)
        {
            case NameTarget n: scope.Set(n.Name, value); break;
            case AttrTarget a:
                if (!scope.TryGet(a.Object, out var obj) || obj is not Namespace ns)
                    throw new TemplateError($"cannot assign attribute on non-namespace object '{a.Object}'");
                ns.Attributes[a.Attribute] = value;
                break;
            case TupleTarget t:
            {
                var values = value is string or List<object?> or PyIterator or OrderedDictionary<string, object?>
                    ? Py.Iterate(value).ToList()
                    : throw new TemplateError($"cannot unpack non-iterable {Py.TypeName(value)} object");
                if (values.Count != t.Items.Count)
                    throw new TemplateError(values.Count < t.Items.Count
                        ? $"not enough values to unpack (expected {t.Items.Count}, got {values.Count})"
                        : $"too many values to unpack (expected {t.Items.Count})");
                for (int i = 0; i < values.Count; i++) Assign(t.Items[i], values[i], scope);
                break;
            }
        }
    }

    public object? Eval(Expr expr, Scope scope)
    {
        switch (expr)
        {
            case ConstExpr c: return c.Value;
            case NameExpr n:
                if (scope.TryGet(n.Name, out var v)) return v;
                if (_globals.TryGetValue(n.Name, out var g)) return g;
                return new Undefined($"'{n.Name}' is undefined");
            case ListExpr l: return l.Items.Select(x => Eval(x, scope)).ToList();
            case TupleExpr t: return new PyTuple(t.Items.Select(x => Eval(x, scope)));
            case DictExpr d:
            {
                var dict = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
                foreach (var (k, val) in d.Items)
                {
                    var key = Eval(k, scope);
                    if (key is not string ks) throw new TemplateError($"dict keys must be strings here, got {Py.TypeName(key)}");
                    dict[ks] = Eval(val, scope);
                }
                return dict;
            }
            case AttrExpr a: return Access.GetAttr(Eval(a.Object, scope), a.Attribute);
            case ItemExpr i: return Access.GetItem(Eval(i.Object, scope), Eval(i.Key, scope));
            case SliceExpr s:
                return Access.Slice(Eval(s.Object, scope),
                    s.Start is null ? null : Eval(s.Start, scope), s.Stop is null ? null : Eval(s.Stop, scope), s.Step is null ? null : Eval(s.Step, scope));
            case CallExpr call:
            {
                var callee = Eval(call.Callee, scope);
                var (args, kwargs) = EvalArgs(call.Args, call.Kwargs, scope);
                return Call(callee, args, kwargs);
            }
            case FilterExpr f: return ApplyFilter(f, Eval(f.Value!, scope), scope);
            case TestExpr t:
            {
                var value = Eval(t.Value, scope);
                var args = t.Args.Select(x => Eval(x, scope)).ToList();
                bool result = Builtins.Tests[t.Name](value, args);
                return t.Negated ? !result : result;
            }
            case UnaryExpr u:
            {
                var operand = Eval(u.Operand, scope);
                return u.Op switch
                {
                    "not" => !Py.Truthy(operand),
                    "-" => Operators.Negate(operand),
                    _ => Operators.Plus(operand),
                };
            }
            case BinaryExpr b:
            {
                if (b.Op == "and") { var l = Eval(b.Left, scope); return Py.Truthy(l) ? Eval(b.Right, scope) : l; }
                if (b.Op == "or") { var l = Eval(b.Left, scope); return Py.Truthy(l) ? l : Eval(b.Right, scope); }
                return Operators.Binary(b.Op, Eval(b.Left, scope), Eval(b.Right, scope));
            }
            case CompareExpr c:
            {
                var left = Eval(c.First, scope);
                foreach (var (op, operandExpr) in c.Rest)
                {
                    var right = Eval(operandExpr, scope);
                    if (!Operators.Compare(op, left, right)) return false;
                    left = right;
                }
                return true;
            }
            case CondExpr c:
                if (Py.Truthy(Eval(c.Test, scope))) return Eval(c.Then, scope);
                return c.Else is null ? new Undefined("the inline if-expression evaluated to false and no else section was defined") : Eval(c.Else, scope);
            default: throw new TemplateError($"unknown expression {expr.GetType().Name}");
        }
    }

    private (List<object?>, List<KeyValuePair<string, object?>>) EvalArgs(List<Expr> args, List<(string Name, Expr Value)> kwargs, Scope scope) =>
        (args.Select(a => Eval(a, scope)).ToList(), kwargs.Select(k => new KeyValuePair<string, object?>(k.Name, Eval(k.Value, scope))).ToList());

    public object? Call(object? callee, List<object?> args, List<KeyValuePair<string, object?>> kwargs) => callee switch
    {
        PyCallable c => c.Invoke(this, args, kwargs),
        Undefined u => throw u.Fail(),
        _ => throw new TemplateError($"'{Py.TypeName(callee)}' object is not callable"),
    };

    private object? ApplyFilter(FilterExpr f, object? value, Scope scope)
    {
        var (args, kwargs) = EvalArgs(f.Args, f.Kwargs, scope);
        return Builtins.ApplyFilter(this, f.Name, value, args, kwargs);
    }
}
