using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace FastMM.Runtime.Templates;

// Template values mirror Python's: null (None), bool, long (int), double (float), string, List<object?> (list),
// PyTuple, OrderedDictionary<string, object?> (dict), plus the jinja-only kinds below.

/// <summary>jinja2's default Undefined: renders empty, is falsy and iterates as empty; any attribute, item or call fails.</summary>
internal sealed class Undefined(string message)
{
    /// <summary>What jinja2's UndefinedError would say on use, e.g. "'x' is undefined".</summary>
    public string Message { get; } = message;
    public TemplateError Fail() => new(Message);
    public override string ToString() => "";
}

/// <summary>A Python tuple: a list that prints with parentheses.</summary>
internal sealed class PyTuple : List<object?>
{
    public PyTuple() { }
    public PyTuple(IEnumerable<object?> items) : base(items) { }
}

/// <summary>jinja2's namespace(): the one object a template may assign attributes on.</summary>
internal sealed class Namespace
{
    public OrderedDictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

/// <summary>A single-pass Python generator/iterator (what select/map/selectattr return): it has no len().</summary>
internal sealed class PyIterator(IEnumerable<object?> source)
{
    private IEnumerator<object?>? _e = source.GetEnumerator();

    public IEnumerable<object?> Drain()
    {
        if (_e is null) yield break;
        while (_e.MoveNext()) yield return _e.Current;
        _e = null;
    }
}

/// <summary>Something a template can call: a macro, a global function or a bound method.</summary>
internal abstract class PyCallable
{
    public abstract string Name { get; }
    public abstract object? Invoke(Interpreter interp, List<object?> args, List<KeyValuePair<string, object?>> kwargs);
}

internal sealed class BuiltinFunction(string name, Func<Interpreter, List<object?>, List<KeyValuePair<string, object?>>, object?> body) : PyCallable
{
    public override string Name => name;
    public override object? Invoke(Interpreter interp, List<object?> args, List<KeyValuePair<string, object?>> kwargs) => body(interp, args, kwargs);
}

/// <summary>A method looked up on a value (s.strip, d.items, loop.cycle): called later with its arguments.</summary>
internal sealed class BoundMethod(object self, string name) : PyCallable
{
    public object Self { get; } = self;
    public override string Name => name;
    public override object? Invoke(Interpreter interp, List<object?> args, List<KeyValuePair<string, object?>> kwargs) =>
        Methods.Call(Self, name, args, kwargs);
}

/// <summary>Python semantics for the value model: truth, str/repr, equality, ordering, arithmetic, iteration.</summary>
internal static class Py
{
    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        PyTuple => "tuple",
        List<object?> => "list",
        OrderedDictionary<string, object?> => "dict",
        Undefined => "Undefined",
        Namespace => "Namespace",
        PyIterator => "generator",
        LoopContext => "LoopContext",
        PyCallable => "function",
        _ => v.GetType().Name,
    };

    public static bool Truthy(object? v) => v switch
    {
        null => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        ICollection c => c.Count > 0,
        Undefined => false,
        _ => true,
    };

    /// <summary>Python's str.isspace() for one UTF-16 unit (adds the \x1c-\x1f separators .NET does not count).</summary>
    public static bool IsSpace(char c) => char.IsWhiteSpace(c) || (c >= '\x1c' && c <= '\x1f');

    public static string Str(object? v) => v switch
    {
        null => "None",
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FormatFloat(d),
        Undefined => "",
        _ => Repr(v),
    };

    public static string Repr(object? v)
    {
        var sb = new StringBuilder();
        AppendRepr(sb, v, 0);
        return sb.ToString();
    }

    private static void AppendRepr(StringBuilder sb, object? v, int depth)
    {
        if (depth > 100) throw new TemplateError("value nested too deeply to print");
        switch (v)
        {
            case string s: AppendStringRepr(sb, s); break;
            case PyTuple t:
                sb.Append('(');
                for (int i = 0; i < t.Count; i++) { if (i > 0) sb.Append(", "); AppendRepr(sb, t[i], depth + 1); }
                if (t.Count == 1) sb.Append(',');
                sb.Append(')');
                break;
            case List<object?> l:
                sb.Append('[');
                for (int i = 0; i < l.Count; i++) { if (i > 0) sb.Append(", "); AppendRepr(sb, l[i], depth + 1); }
                sb.Append(']');
                break;
            case OrderedDictionary<string, object?> d:
                sb.Append('{');
                bool first = true;
                foreach (var kv in d)
                {
                    if (!first) sb.Append(", ");
                    first = false;
                    AppendStringRepr(sb, kv.Key);
                    sb.Append(": ");
                    AppendRepr(sb, kv.Value, depth + 1);
                }
                sb.Append('}');
                break;
            case Undefined: sb.Append("Undefined"); break;
            case Namespace ns:
                sb.Append("<Namespace {");
                bool f = true;
                foreach (var kv in ns.Attributes) { if (!f) sb.Append(", "); f = false; AppendStringRepr(sb, kv.Key); sb.Append(": "); AppendRepr(sb, kv.Value, depth + 1); }
                sb.Append("}>");
                break;
            case PyIterator: sb.Append("<generator object>"); break;
            case PyCallable c: sb.Append("<function ").Append(c.Name).Append('>'); break;
            default: sb.Append(Str(v)); break;
        }
    }

    /// <summary>Python's repr(str): single quotes unless the text has ' and no ", escapes for controls.</summary>
    private static void AppendStringRepr(StringBuilder sb, string s)
    {
        char q = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        sb.Append(q);
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c == q || c == '\\') sb.Append('\\').Append(c);
            else if (c == '\n') sb.Append("\\n");
            else if (c == '\r') sb.Append("\\r");
            else if (c == '\t') sb.Append("\\t");
            else if (c < 0x20 || c == 0x7f) sb.Append("\\x").Append(((int)c).ToString("x2"));
            else if (c >= 0x80 && c <= 0xa0 || c == 0xad) sb.Append("\\x").Append(((int)c).ToString("x2"));
            else sb.Append(c);
        }
        sb.Append(q);
    }

    /// <summary>Python's repr(float): shortest round-trip digits, exponent form below 1e-4 and from 1e16.</summary>
    public static string FormatFloat(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        // Shortest round-trip digits come from "R"; re-derive mantissa digits and exponent from it.
        string shortest = d.ToString("R", CultureInfo.InvariantCulture);
        bool neg = shortest.StartsWith('-');
        if (neg) shortest = shortest[1..];
        int exp = 0;
        int ePos = shortest.IndexOfAny(['E', 'e']);
        string mant = shortest;
        if (ePos >= 0) { exp = int.Parse(shortest[(ePos + 1)..], CultureInfo.InvariantCulture); mant = shortest[..ePos]; }
        int dot = mant.IndexOf('.');
        string digits = dot >= 0 ? mant.Remove(dot, 1) : mant;
        int pointPos = (dot >= 0 ? dot : mant.Length) + exp; // decimal point position relative to digits
        int lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0') { lead++; pointPos--; }
        digits = digits[lead..].TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        int sciExp = pointPos - 1;
        var sb = new StringBuilder();
        if (neg) sb.Append('-');
        if (sciExp < -4 || sciExp >= 16)
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            sb.Append('e').Append(sciExp < 0 ? '-' : '+').Append(Math.Abs(sciExp).ToString("00", CultureInfo.InvariantCulture));
        }
        else if (pointPos <= 0)
        {
            sb.Append("0.").Append('0', -pointPos).Append(digits);
        }
        else if (pointPos >= digits.Length)
        {
            sb.Append(digits).Append('0', pointPos - digits.Length).Append(".0");
        }
        else
        {
            sb.Append(digits, 0, pointPos).Append('.').Append(digits, pointPos, digits.Length - pointPos);
        }
        return sb.ToString();
    }

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new TemplateError($"expected a number, got {TypeName(v)}"),
    };

    public static bool Eq(object? a, object? b)
    {
        if (a is Undefined || b is Undefined) return a is Undefined && b is Undefined;
        if (a is null || b is null) return a is null && b is null;
        if (IsNumber(a) && IsNumber(b))
        {
            if (a is double || b is double) return ToDouble(a) == ToDouble(b);
            return ToLong(a) == ToLong(b);
        }
        switch (a)
        {
            case string sa: return b is string sb && sa == sb;
            case List<object?> la:
                if (b is not List<object?> lb || la.Count != lb.Count || (la is PyTuple) != (lb is PyTuple)) return false;
                for (int i = 0; i < la.Count; i++) if (!Eq(la[i], lb[i])) return false;
                return true;
            case OrderedDictionary<string, object?> da:
                if (b is not OrderedDictionary<string, object?> db || da.Count != db.Count) return false;
                foreach (var kv in da)
                    if (!db.TryGetValue(kv.Key, out var other) || !Eq(kv.Value, other)) return false;
                return true;
            default: return ReferenceEquals(a, b);
        }
    }

    public static long ToLong(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        _ => throw new TemplateError($"expected an integer, got {TypeName(v)}"),
    };

    /// <summary>Python ordering (&lt;, sort): numbers with numbers, strings by code point, lists element-wise.</summary>
    public static int Compare(object? a, object? b)
    {
        if (IsNumber(a) && IsNumber(b))
        {
            if (a is double || b is double) return ToDouble(a).CompareTo(ToDouble(b));
            return ToLong(a).CompareTo(ToLong(b));
        }
        if (a is string sa && b is string sb) return CompareCodePoints(sa, sb);
        if (a is List<object?> la && b is List<object?> lb && (la is PyTuple) == (lb is PyTuple))
        {
            for (int i = 0; i < Math.Min(la.Count, lb.Count); i++)
            {
                if (Eq(la[i], lb[i])) continue;
                return Compare(la[i], lb[i]);
            }
            return la.Count.CompareTo(lb.Count);
        }
        throw new TemplateError($"'<' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    public static int CompareCodePoints(string a, string b)
    {
        int i = 0, j = 0;
        while (i < a.Length && j < b.Length)
        {
            int ca = CodePointAt(a, i), cb = CodePointAt(b, j);
            if (ca != cb) return ca.CompareTo(cb);
            i += ca > 0xFFFF ? 2 : 1;
            j += cb > 0xFFFF ? 2 : 1;
        }
        return (a.Length - i).CompareTo(b.Length - j);
    }

    private static int CodePointAt(string s, int i) =>
        char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? char.ConvertToUtf32(s[i], s[i + 1]) : s[i];

    /// <summary>A string as Python sees it: one element per code point, not per UTF-16 unit.</summary>
    public static List<string> CodePoints(string s)
    {
        var list = new List<string>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) { list.Add(s.Substring(i, 2)); i++; }
            else list.Add(s[i].ToString());
        }
        return list;
    }

    public static int StrLen(string s)
    {
        int n = 0;
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) i++;
            n++;
        }
        return n;
    }

    public static int Len(object? v) => v switch
    {
        string s => StrLen(s),
        ICollection c => c.Count,
        Undefined => 0,
        Namespace => throw new TemplateError("object of type 'Namespace' has no len()"),
        _ => throw new TemplateError($"object of type '{TypeName(v)}' has no len()"),
    };

    /// <summary>Python's iter(): lists, tuples, dict keys, string code points, generators (consumed), Undefined (empty).</summary>
    public static IEnumerable<object?> Iterate(object? v) => v switch
    {
        List<object?> l => l.ToList(),
        OrderedDictionary<string, object?> d => d.Keys.Cast<object?>().ToList(),
        string s => CodePoints(s).Cast<object?>(),
        PyIterator it => it.Drain(),
        Undefined => [],
        _ => throw new TemplateError($"'{TypeName(v)}' object is not iterable"),
    };

    public static bool Contains(object? container, object? item) => container switch
    {
        string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal)
            : throw new TemplateError($"'in <string>' requires string as left operand, not {TypeName(item)}"),
        OrderedDictionary<string, object?> d => item is string k && d.ContainsKey(k),
        List<object?> l => l.Any(x => Eq(x, item)),
        PyIterator it => it.Drain().Any(x => Eq(x, item)),
        Undefined => false,
        _ => throw new TemplateError($"argument of type '{TypeName(container)}' is not iterable"),
    };

    /// <summary>Converts caller data (CLR primitives, dictionaries, lists, JSON) into the template value model.</summary>
    public static object? FromClr(object? v, string path, int depth = 0)
    {
        if (depth > 64) throw new FastMMException($"chat template input {path}: nested too deeply");
        switch (v)
        {
            case null: return null;
            case string or bool or long or double: return v;
            case int or short or sbyte or byte or ushort or uint: return Convert.ToInt64(v, CultureInfo.InvariantCulture);
            case ulong u: return u <= long.MaxValue ? (long)u : (double)u;
            case float f: return (double)f;
            case decimal m: return (double)m;
            case char c: return c.ToString();
            case Enum e: return e.ToString();
            case JsonElement je: return FromJson(je, path, depth);
            case PyTuple or Undefined or Namespace: return v;
            case IDictionary<string, object?> dict:
            {
                var d = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
                foreach (var kv in dict) d[kv.Key] = FromClr(kv.Value, $"{path}.{kv.Key}", depth + 1);
                return d;
            }
            case IReadOnlyDictionary<string, object?> rdict:
            {
                var d = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
                foreach (var kv in rdict) d[kv.Key] = FromClr(kv.Value, $"{path}.{kv.Key}", depth + 1);
                return d;
            }
            case IDictionary<string, string> sdict:
            {
                var d = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
                foreach (var kv in sdict) d[kv.Key] = kv.Value;
                return d;
            }
            case IEnumerable e:
            {
                var list = new List<object?>();
                int i = 0;
                foreach (var item in e) list.Add(FromClr(item, $"{path}[{i++}]", depth + 1));
                return list;
            }
            default: throw new FastMMException($"chat template input {path}: values of type {v.GetType().Name} are not supported");
        }
    }

    public static object? FromJson(JsonElement e, string path, int depth = 0)
    {
        if (depth > 64) throw new FastMMException($"chat template input {path}: nested too deeply");
        switch (e.ValueKind)
        {
            case JsonValueKind.Null: return null;
            case JsonValueKind.True: return true;
            case JsonValueKind.False: return false;
            case JsonValueKind.String: return e.GetString();
            case JsonValueKind.Number:
                return e.TryGetInt64(out long l) ? (object)l : e.GetDouble();
            case JsonValueKind.Array:
                return e.EnumerateArray().Select((x, i) => FromJson(x, $"{path}[{i}]", depth + 1)).ToList();
            case JsonValueKind.Object:
            {
                var d = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
                foreach (var p in e.EnumerateObject()) d[p.Name] = FromJson(p.Value, $"{path}.{p.Name}", depth + 1);
                return d;
            }
            default: throw new FastMMException($"chat template input {path}: JSON {e.ValueKind} is not supported");
        }
    }
}
