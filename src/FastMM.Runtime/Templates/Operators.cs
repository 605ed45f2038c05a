using System.Text;

namespace FastMM.Runtime.Templates;

/// <summary>Python arithmetic and comparison on template values.</summary>
internal static class Operators
{
    public static object? Negate(object? v) => v switch
    {
        long l => (object)checked(-l),
        double d => -d,
        bool b => b ? -1L : 0L,
        Undefined u => throw u.Fail(),
        _ => throw new TemplateError($"bad operand type for unary -: '{Py.TypeName(v)}'"),
    };

    public static object? Plus(object? v) => v switch
    {
        long or double => v,
        bool b => b ? 1L : 0L,
        Undefined u => throw u.Fail(),
        _ => throw new TemplateError($"bad operand type for unary +: '{Py.TypeName(v)}'"),
    };

    public static bool Compare(string op, object? a, object? b) => op switch
    {
        "==" => Py.Eq(a, b),
        "!=" => !Py.Eq(a, b),
        "<" => Order(a, b) < 0,
        "<=" => Order(a, b) <= 0,
        ">" => Order(a, b) > 0,
        ">=" => Order(a, b) >= 0,
        "in" => Py.Contains(b, a),
        "notin" => !Py.Contains(b, a),
        _ => throw new TemplateError($"unknown comparison '{op}'"),
    };

    private static int Order(object? a, object? b)
    {
        if (a is Undefined ua) throw ua.Fail();
        if (b is Undefined ub) throw ub.Fail();
        return Py.Compare(a, b);
    }

    public static object? Binary(string op, object? a, object? b)
    {
        if (op == "~") return Interpreter.CheckSize(Py.Str(a) + Py.Str(b)); // jinja2's ~ always joins str() of both
        if (a is Undefined ua) throw ua.Fail();
        if (b is Undefined ub) throw ub.Fail();
        switch (op)
        {
            case "+":
                if (a is string sa && b is string sb) return Interpreter.CheckSize(sa + sb);
                if (a is List<object?> la && b is List<object?> lb && (la is PyTuple) == (lb is PyTuple))
                {
                    if (la.Count + lb.Count > Interpreter.MaxOutputChars) throw new TemplateError("list too large");
                    return la is PyTuple ? new PyTuple(la.Concat(lb)) : la.Concat(lb).ToList();
                }
                return Arith(op, a, b);
            case "*":
                if (a is string s1 && IsInt(b)) return Repeat(s1, Py.ToLong(b));
                if (b is string s2 && IsInt(a)) return Repeat(s2, Py.ToLong(a));
                if (a is List<object?> l1 && IsInt(b)) return RepeatList(l1, Py.ToLong(b));
                if (b is List<object?> l2 && IsInt(a)) return RepeatList(l2, Py.ToLong(a));
                return Arith(op, a, b);
            case "%":
                if (a is string) throw new TemplateError("printf-style string formatting ('%' on a string) is not supported");
                return Arith(op, a, b);
            default:
                return Arith(op, a, b);
        }
    }

    private static bool IsInt(object? v) => v is long or bool;

    private static string Repeat(string s, long n)
    {
        if (n <= 0 || s.Length == 0) return "";
        if (s.Length * n > Interpreter.MaxOutputChars) throw new TemplateError($"template output exceeds {Interpreter.MaxOutputChars} characters");
        return new StringBuilder(s.Length * (int)n).Insert(0, s, (int)n).ToString();
    }

    private static List<object?> RepeatList(List<object?> l, long n)
    {
        if (n <= 0 || l.Count == 0) return l is PyTuple ? new PyTuple() : [];
        if (l.Count * n > Interpreter.MaxOutputChars) throw new TemplateError("list too large");
        var items = Enumerable.Range(0, (int)n).SelectMany(_ => l);
        return l is PyTuple ? new PyTuple(items) : items.ToList();
    }

    private static object? Arith(string op, object? a, object? b)
    {
        if (!Py.IsNumber(a) || !Py.IsNumber(b))
            throw new TemplateError($"unsupported operand type(s) for {op}: '{Py.TypeName(a)}' and '{Py.TypeName(b)}'");
        if (op == "/")
        {
            double den = Py.ToDouble(b);
            if (den == 0) throw new TemplateError("division by zero");
            return Py.ToDouble(a) / den;
        }
        if (a is double || b is double)
        {
            double x = Py.ToDouble(a), y = Py.ToDouble(b);
            switch (op)
            {
                case "+": return x + y;
                case "-": return x - y;
                case "*": return x * y;
                case "**": return Math.Pow(x, y);
                case "//": if (y == 0) throw new TemplateError("float floor division by zero"); return Math.Floor(x / y);
                case "%":
                    if (y == 0) throw new TemplateError("float modulo");
                    double m = x % y;
                    if (m != 0 && (m < 0) != (y < 0)) m += y; // Python: the result takes the divisor's sign
                    return m;
            }
        }
        long i = Py.ToLong(a), j = Py.ToLong(b);
        try
        {
            switch (op)
            {
                case "+": return checked(i + j);
                case "-": return checked(i - j);
                case "*": return checked(i * j);
                case "//":
                    if (j == 0) throw new TemplateError("integer division or modulo by zero");
                    return FloorDiv(i, j);
                case "%":
                    if (j == 0) throw new TemplateError("integer division or modulo by zero");
                    return i - FloorDiv(i, j) * j;
                case "**":
                    if (j < 0) return Math.Pow(i, j);
                    if (i is 0 or 1) return j == 0 ? 1L : i;
                    if (i == -1) return (j & 1) == 0 ? 1L : -1L;
                    long r = 1;
                    for (long k = 0; k < j; k++) r = checked(r * i); // |i| >= 2 overflows within 64 steps
                    return r;
            }
        }
        catch (OverflowException) { throw new TemplateError("integer result too large (beyond 64 bits)"); }
        throw new TemplateError($"unknown operator '{op}'");
    }

    private static long FloorDiv(long a, long b)
    {
        long q = a / b;
        if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
        return q;
    }
}
