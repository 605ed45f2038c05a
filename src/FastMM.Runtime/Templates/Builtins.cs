using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace FastMM.Runtime.Templates;

internal delegate object? FilterFn(Interpreter interp, object? value, ArgReader args);

/// <summary>jinja2's filters, tests and globals as transformers configures them (tojson, raise_exception, strftime_now).</summary>
internal static partial class Builtins
{
    public static readonly IReadOnlyDictionary<string, object?> Globals = new Dictionary<string, object?>(StringComparer.Ordinal)
    {
        ["raise_exception"] = new BuiltinFunction("raise_exception", (_, args, _) =>
            throw new TemplateRaised(args.Count > 0 ? Py.Str(args[0]) : "")),
        ["strftime_now"] = new BuiltinFunction("strftime_now", (interp, args, kwargs) =>
        {
            var a = new ArgReader("strftime_now", args, kwargs);
            var format = a.Req(0, "format") as string ?? throw new TemplateError("strftime_now() argument must be str");
            a.Done(1);
            return Strftime(interp.Clock.GetLocalNow().DateTime, format);
        }),
        ["namespace"] = new BuiltinFunction("namespace", (_, args, kwargs) =>
        {
            var ns = new Namespace();
            if (args.Count > 1) throw new TemplateError("namespace() takes at most one positional argument");
            if (args.Count == 1)
            {
                if (args[0] is not OrderedDictionary<string, object?> d) throw new TemplateError("namespace() positional argument must be a dict");
                foreach (var kv in d) ns.Attributes[kv.Key] = kv.Value;
            }
            foreach (var kv in kwargs) ns.Attributes[kv.Key] = kv.Value;
            return ns;
        }),
        ["dict"] = new BuiltinFunction("dict", (_, args, kwargs) =>
        {
            var d = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
            if (args.Count > 1) throw new TemplateError("dict() takes at most one positional argument");
            if (args.Count == 1)
            {
                if (args[0] is not OrderedDictionary<string, object?> src) throw new TemplateError("dict() positional argument must be a dict");
                foreach (var kv in src) d[kv.Key] = kv.Value;
            }
            foreach (var kv in kwargs) d[kv.Key] = kv.Value;
            return d;
        }),
        ["range"] = new BuiltinFunction("range", (_, args, kwargs) =>
        {
            if (kwargs.Count > 0 || args.Count is < 1 or > 3) throw new TemplateError("range() takes 1 to 3 positional arguments");
            long start = 0, stop, step = 1;
            if (args.Count == 1) stop = Py.ToLong(args[0]);
            else { start = Py.ToLong(args[0]); stop = Py.ToLong(args[1]); if (args.Count == 3) step = Py.ToLong(args[2]); }
            if (step == 0) throw new TemplateError("range() arg 3 must not be zero");
            long count = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0) : (start > stop ? (start - stop - step - 1) / -step : 0);
            // The jinja2 sandbox refuses ranges longer than MAX_RANGE (100000).
            if (count > 100_000) throw new TemplateError("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
            var list = new List<object?>((int)count);
            for (long i = 0, v = start; i < count; i++, v += step) list.Add(v);
            return list;
        }),
    };

    public static readonly IReadOnlyDictionary<string, FilterFn> Filters = new Dictionary<string, FilterFn>(StringComparer.Ordinal)
    {
        ["abs"] = (_, v, a) => { a.Done(0); return v switch { long l => (object)checked(Math.Abs(l)), double d => Math.Abs(d), bool b => b ? 1L : 0L, _ => throw new TemplateError($"bad operand type for abs(): '{Py.TypeName(v)}'") }; },
        ["attr"] = (_, v, a) => { var n = a.Req(0, "name") as string ?? throw new TemplateError("attr name must be a string"); a.Done(1); return Access.GetAttr(v, n); },
        ["capitalize"] = (_, v, a) => { a.Done(0); return Methods.Capitalize(Py.Str(v)); },
        ["count"] = (_, v, a) => { a.Done(0); return Length(v); },
        ["length"] = (_, v, a) => { a.Done(0); return Length(v); },
        ["default"] = Default,
        ["d"] = Default,
        ["dictsort"] = DictSort,
        ["first"] = (_, v, a) =>
        {
            a.Done(0);
            if (v is Undefined u) throw u.Fail();
            foreach (var x in Py.Iterate(v)) return x;
            return new Undefined("No first item, sequence was empty.");
        },
        ["last"] = (_, v, a) =>
        {
            a.Done(0);
            if (v is Undefined u) throw u.Fail();
            if (v is PyIterator) throw new TemplateError("'generator' object is not reversible");
            var items = Py.Iterate(v).ToList();
            return items.Count > 0 ? items[^1] : new Undefined("No last item, sequence was empty.");
        },
        ["float"] = (_, v, a) => { var dflt = a.Opt(0, "default", 0.0); a.Done(1); return ToFloat(v) ?? dflt; },
        ["int"] = ToIntFilter,
        ["items"] = (_, v, a) =>
        {
            a.Done(0);
            if (v is Undefined) return new PyIterator([]);
            if (v is not OrderedDictionary<string, object?> d) throw new TemplateError("Can only get item pairs from a mapping.");
            return new PyIterator(d.Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList());
        },
        ["join"] = (_, v, a) =>
        {
            var sep = a.Opt(0, "d", "");
            var attr = a.Opt(1, "attribute", null);
            a.Done(2);
            var items = Py.Iterate(v).Select(x => attr is null ? x : AttrPath(x, attr));
            return Interpreter.CheckSize(string.Join(Py.Str(sep), items.Select(Py.Str)));
        },
        ["list"] = (_, v, a) => { a.Done(0); return Py.Iterate(v).ToList(); },
        ["lower"] = (_, v, a) => { a.Done(0); return Py.Str(v).ToLowerInvariant(); },
        ["upper"] = (_, v, a) => { a.Done(0); return Py.Str(v).ToUpperInvariant(); },
        ["map"] = Map,
        ["max"] = (_, v, a) => MinMax(v, a, max: true),
        ["min"] = (_, v, a) => MinMax(v, a, max: false),
        ["select"] = (i, v, a) => Select(i, v, a, attr: false, keep: true),
        ["reject"] = (i, v, a) => Select(i, v, a, attr: false, keep: false),
        ["selectattr"] = (i, v, a) => Select(i, v, a, attr: true, keep: true),
        ["rejectattr"] = (i, v, a) => Select(i, v, a, attr: true, keep: false),
        ["replace"] = (_, v, a) =>
        {
            var old = Py.Str(a.Req(0, "old"));
            var @new = Py.Str(a.Req(1, "new"));
            var count = a.Opt(2, "count", null);
            a.Done(3);
            return Methods.Replace(Py.Str(v), old, @new, count is null ? -1 : Py.ToLong(count));
        },
        ["reverse"] = (_, v, a) =>
        {
            a.Done(0);
            if (v is string s) { var cps = Py.CodePoints(s); cps.Reverse(); return string.Concat(cps); }
            var items = Py.Iterate(v).ToList();
            items.Reverse();
            // reversed(list) is a one-shot iterator in Python; a generator input becomes a list.
            return v is PyIterator ? items : new PyIterator(items);
        },
        ["round"] = Round,
        ["safe"] = (_, v, a) => { a.Done(0); return Py.Str(v); },
        ["escape"] = (_, v, a) => { a.Done(0); return Escape(Py.Str(v)); },
        ["e"] = (_, v, a) => { a.Done(0); return Escape(Py.Str(v)); },
        ["sort"] = Sort,
        ["string"] = (_, v, a) => { a.Done(0); return Py.Str(v); },
        ["sum"] = (_, v, a) =>
        {
            var attr = a.Opt(0, "attribute", null);
            object? total = a.Opt(1, "start", 0L);
            a.Done(2);
            foreach (var x in Py.Iterate(v)) total = Operators.Binary("+", total, attr is null ? x : AttrPath(x, attr));
            return total;
        },
        ["title"] = (_, v, a) =>
        {
            a.Done(0);
            // jinja2's own title: words begin after '-', whitespace or an opening bracket (not str.title()).
            var parts = TitleSplit().Split(Py.Str(v));
            var sb = new StringBuilder();
            foreach (var p in parts) if (p.Length > 0) sb.Append(char.ToUpperInvariant(p[0])).Append(p[1..].ToLowerInvariant());
            return sb.ToString();
        },
        ["tojson"] = (_, v, a) =>
        {
            bool ensureAscii = Py.Truthy(a.Opt(0, "ensure_ascii", false));
            var indent = a.Opt(1, "indent", null);
            var separators = a.Opt(2, "separators", null);
            bool sortKeys = Py.Truthy(a.Opt(3, "sort_keys", false));
            a.Done(4);
            return Interpreter.CheckSize(PyJson.Dumps(v, ensureAscii, indent, separators, sortKeys));
        },
        ["trim"] = (_, v, a) => { var chars = a.Opt(0, "chars", null); a.Done(1); return Methods.Strip(Py.Str(v), chars is null ? null : Py.Str(chars), true, true); },
        ["unique"] = Unique,
        ["indent"] = Indent,
        ["wordcount"] = (_, v, a) => { a.Done(0); return (long)WordRegex().Matches(Py.Str(v)).Count; },
    };

    public delegate bool TestFn(object? value, List<object?> args);

    public static readonly IReadOnlyDictionary<string, TestFn> Tests = new Dictionary<string, TestFn>(StringComparer.Ordinal)
    {
        ["defined"] = (v, _) => v is not Undefined,
        ["undefined"] = (v, _) => v is Undefined,
        ["none"] = (v, _) => v is null,
        ["boolean"] = (v, _) => v is bool,
        ["true"] = (v, _) => v is true,
        ["false"] = (v, _) => v is false,
        ["integer"] = (v, _) => v is long,
        ["float"] = (v, _) => v is double,
        ["number"] = (v, _) => v is long or double or bool,
        ["string"] = (v, _) => v is string,
        ["mapping"] = (v, _) => v is OrderedDictionary<string, object?>,
        ["iterable"] = (v, _) => v is string or List<object?> or OrderedDictionary<string, object?> or PyIterator or Undefined,
        ["sequence"] = (v, _) => v is string or List<object?> or OrderedDictionary<string, object?> or Undefined,
        ["callable"] = (v, _) => v is PyCallable or Undefined,
        ["sameas"] = (v, a) => SameAs(v, Arg(a, 0, "sameas")),
        ["escaped"] = (_, _) => false,
        ["odd"] = (v, _) => (Py.ToLong(IntOnly(v)) & 1) == 1,
        ["even"] = (v, _) => (Py.ToLong(IntOnly(v)) & 1) == 0,
        ["divisibleby"] = (v, a) =>
        {
            var d = Arg(a, 0, "divisibleby");
            if (v is double || d is double) { double y = Py.ToDouble(d); return y != 0 ? Py.ToDouble(v) % y == 0 : throw new TemplateError("float modulo"); }
            long n = Py.ToLong(d);
            return n != 0 ? Py.ToLong(v) % n == 0 : throw new TemplateError("integer division or modulo by zero");
        },
        ["lower"] = (v, _) => v is string s && (bool)Methods.Call(s, "islower", [], [])!,
        ["upper"] = (v, _) => v is string s && (bool)Methods.Call(s, "isupper", [], [])!,
        ["in"] = (v, a) => Py.Contains(Arg(a, 0, "in"), v),
        ["eq"] = (v, a) => Operators.Compare("==", v, Arg(a, 0, "eq")),
        ["equalto"] = (v, a) => Operators.Compare("==", v, Arg(a, 0, "equalto")),
        ["=="] = (v, a) => Operators.Compare("==", v, Arg(a, 0, "==")),
        ["ne"] = (v, a) => Operators.Compare("!=", v, Arg(a, 0, "ne")),
        ["!="] = (v, a) => Operators.Compare("!=", v, Arg(a, 0, "!=")),
        ["lt"] = (v, a) => Operators.Compare("<", v, Arg(a, 0, "lt")),
        ["lessthan"] = (v, a) => Operators.Compare("<", v, Arg(a, 0, "lessthan")),
        ["<"] = (v, a) => Operators.Compare("<", v, Arg(a, 0, "<")),
        ["le"] = (v, a) => Operators.Compare("<=", v, Arg(a, 0, "le")),
        ["<="] = (v, a) => Operators.Compare("<=", v, Arg(a, 0, "<=")),
        ["gt"] = (v, a) => Operators.Compare(">", v, Arg(a, 0, "gt")),
        ["greaterthan"] = (v, a) => Operators.Compare(">", v, Arg(a, 0, "greaterthan")),
        [">"] = (v, a) => Operators.Compare(">", v, Arg(a, 0, ">")),
        ["ge"] = (v, a) => Operators.Compare(">=", v, Arg(a, 0, "ge")),
        [">="] = (v, a) => Operators.Compare(">=", v, Arg(a, 0, ">=")),
    };

    private static object? Arg(List<object?> args, int i, string test) =>
        i < args.Count ? args[i] : throw new TemplateError($"test '{test}' needs an argument");

    private static object? IntOnly(object? v) => v is long or bool ? v : throw new TemplateError($"test needs an integer, got {Py.TypeName(v)}");

    private static bool SameAs(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (bool x, bool y) => x == y,
        (long x, long y) => x == y && x is >= -5 and <= 256, // CPython caches small ints
        _ => a is not null && ReferenceEquals(a, b),
    };

    public static object? ApplyFilter(Interpreter interp, string name, object? value, List<object?> args, List<KeyValuePair<string, object?>> kwargs)
    {
        if (!Filters.TryGetValue(name, out var f)) throw new TemplateError($"filter '{name}' is not supported");
        return f(interp, value, new ArgReader(name, args, kwargs));
    }

    private static object? Length(object? v) => (long)Py.Len(v);

    private static object? Default(Interpreter _, object? v, ArgReader a)
    {
        var dflt = a.Opt(0, "default_value", "");
        bool boolean = Py.Truthy(a.Opt(1, "boolean", false));
        a.Done(2);
        return v is Undefined || (boolean && !Py.Truthy(v)) ? dflt : v;
    }

    /// <summary>jinja2 reads "a.b" attribute paths item-first (environment.getitem), and "0" as an index.</summary>
    private static object? AttrPath(object? v, object? attribute)
    {
        if (attribute is long or bool) return Access.GetItem(v, attribute);
        foreach (var part in Py.Str(attribute).Split('.'))
        {
            object key = long.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out long idx) ? idx : part;
            v = Access.GetItem(v, key);
        }
        return v;
    }

    private static object? SortKey(object? v, bool caseSensitive) => !caseSensitive && v is string s ? s.ToLowerInvariant() : v;

    private static object? DictSort(Interpreter _, object? v, ArgReader a)
    {
        bool cs = Py.Truthy(a.Opt(0, "case_sensitive", false));
        var by = Py.Str(a.Opt(1, "by", "key"));
        bool reverse = Py.Truthy(a.Opt(2, "reverse", false));
        a.Done(3);
        if (v is not OrderedDictionary<string, object?> d) throw new TemplateError("dictsort needs a mapping");
        int pos = by switch { "key" => 0, "value" => 1, _ => throw new TemplateError("You can only sort by either \"key\" or \"value\"") };
        var items = d.Select(kv => new PyTuple([kv.Key, kv.Value])).ToList();
        var sorted = StableSort(items.Cast<object?>().ToList(), x => SortKey(((PyTuple)x!)[pos], cs), reverse);
        return sorted;
    }

    private static List<object?> StableSort(List<object?> items, Func<object?, object?> key, bool reverse)
    {
        var keyed = items.Select((x, i) => (Key: key(x), Item: x, Index: i)).ToList();
        keyed.Sort((p, q) =>
        {
            int c = Py.Compare(p.Key, q.Key);
            if (reverse) c = -c;
            return c != 0 ? c : p.Index.CompareTo(q.Index);
        });
        return keyed.Select(k => k.Item).ToList();
    }

    private static object? Sort(Interpreter _, object? v, ArgReader a)
    {
        bool reverse = Py.Truthy(a.Opt(0, "reverse", false));
        bool cs = Py.Truthy(a.Opt(1, "case_sensitive", false));
        var attr = a.Opt(2, "attribute", null);
        a.Done(3);
        return StableSort(Py.Iterate(v).ToList(), x => SortKey(attr is null ? x : AttrPath(x, attr), cs), reverse);
    }

    private static object? Unique(Interpreter _, object? v, ArgReader a)
    {
        bool cs = Py.Truthy(a.Opt(0, "case_sensitive", false));
        var attr = a.Opt(1, "attribute", null);
        a.Done(2);
        var seen = new List<object?>();
        var result = new List<object?>();
        foreach (var x in Py.Iterate(v))
        {
            var k = SortKey(attr is null ? x : AttrPath(x, attr), cs);
            if (seen.Any(s => Py.Eq(s, k))) continue;
            seen.Add(k);
            result.Add(x);
        }
        return new PyIterator(result);
    }

    private static object? MinMax(object? v, ArgReader a, bool max)
    {
        bool cs = Py.Truthy(a.Opt(0, "case_sensitive", false));
        var attr = a.Opt(1, "attribute", null);
        a.Done(2);
        object? best = null, bestKey = null;
        bool any = false;
        foreach (var x in Py.Iterate(v))
        {
            var k = SortKey(attr is null ? x : AttrPath(x, attr), cs);
            if (!any || (max ? Py.Compare(k, bestKey) > 0 : Py.Compare(k, bestKey) < 0)) { best = x; bestKey = k; any = true; }
        }
        return any ? best : new Undefined("No aggregated item, sequence was empty.");
    }

    private static object? Map(Interpreter interp, object? v, ArgReader a)
    {
        var items = Py.Iterate(v).ToList();
        if (a.PositionalCount == 0)
        {
            var attr = a.Req(0, "attribute");
            var dflt = a.Opt(1, "default", null);
            bool hasDefault = dflt is not null;
            a.Done(0);
            return new PyIterator(items.Select(x =>
            {
                var r = AttrPath(x, attr);
                return hasDefault && r is Undefined ? dflt : r;
            }).ToList());
        }
        var name = a.Req(0, "filter") as string ?? throw new TemplateError("map() filter name must be a string");
        var rest = a.Rest(1).ToList();
        return new PyIterator(items.Select(x => ApplyFilter(interp, name, x, rest, [])).ToList());
    }

    private static object? Select(Interpreter _, object? v, ArgReader a, bool attr, bool keep)
    {
        object? attribute = null;
        int first = 0;
        if (attr) { attribute = a.Req(0, "attribute"); first = 1; }
        var testName = a.PositionalCount > first ? a.Opt(first, "test", null) as string : null;
        var testArgs = a.Rest(first + 1).ToList();
        TestFn? test = null;
        if (testName is not null && !Tests.TryGetValue(testName, out test)) throw new TemplateError($"test '{testName}' is not supported");
        var items = Py.Iterate(v).ToList();
        var result = items.Where(x =>
        {
            var probe = attr ? AttrPath(x, attribute) : x;
            bool ok = test is null ? Py.Truthy(probe) : test(probe, testArgs);
            return ok == keep;
        }).ToList();
        return new PyIterator(result);
    }

    private static object? ToIntFilter(Interpreter _, object? v, ArgReader a)
    {
        var dflt = a.Opt(0, "default", 0L);
        long radix = Py.ToLong(a.Opt(1, "base", 10L));
        a.Done(2);
        switch (v)
        {
            case long or bool: return Py.ToLong(v);
            case double d: return double.IsFinite(d) && Math.Abs(d) < 9.2e18 ? (long)Math.Truncate(d) : dflt;
            case string s:
                var t = s.Trim().Replace("_", "");
                try
                {
                    if (radix == 10 && long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l)) return l;
                    if (radix is 2 or 8 or 16) return Convert.ToInt64(StripRadixPrefix(t, radix), (int)radix);
                }
                catch (Exception e) when (e is FormatException or OverflowException or ArgumentException) { }
                var f = ToFloat(s);
                return f is double fd && double.IsFinite(fd) && Math.Abs(fd) < 9.2e18 ? (long)Math.Truncate(fd) : dflt;
            default: return dflt;
        }
    }

    private static string StripRadixPrefix(string t, long radix)
    {
        string prefix = radix switch { 16 => "0x", 8 => "0o", _ => "0b" };
        return t.StartsWith(prefix, StringComparison.OrdinalIgnoreCase) ? t[2..] : t;
    }

    /// <summary>Python float(): numbers, bools, and strings like " 1.5 ", "1e3", "inf", "nan"; null when it would raise.</summary>
    private static double? ToFloat(object? v)
    {
        switch (v)
        {
            case long or bool or double: return Py.ToDouble(v);
            case string s:
                var t = s.Trim();
                string lower = t.ToLowerInvariant().TrimStart('+', '-');
                if (lower is "inf" or "infinity") return t.StartsWith('-') ? double.NegativeInfinity : double.PositiveInfinity;
                if (lower == "nan") return double.NaN;
                if (t.Length > 0 && t.All(c => char.IsAsciiDigit(c) || c is '.' or 'e' or 'E' or '+' or '-' or '_')
                    && double.TryParse(t.Replace("_", ""), NumberStyles.Float, CultureInfo.InvariantCulture, out double d)) return d;
                return null;
            default: return null;
        }
    }

    private static object? Round(Interpreter _, object? v, ArgReader a)
    {
        long precision = Py.ToLong(a.Opt(0, "precision", 0L));
        var method = Py.Str(a.Opt(1, "method", "common"));
        a.Done(2);
        if (v is long or bool) return method == "common" ? (object)Py.ToLong(v) : Py.ToDouble(v);
        double x = Py.ToDouble(v);
        double scale = Math.Pow(10, precision);
        return method switch
        {
            "common" => Math.Round(x, (int)Math.Clamp(precision, 0, 15), MidpointRounding.ToEven),
            "ceil" => Math.Ceiling(x * scale) / scale,
            "floor" => Math.Floor(x * scale) / scale,
            _ => throw new TemplateError("method must be common, ceil or floor"),
        };
    }

    private static object? Indent(Interpreter _, object? v, ArgReader a)
    {
        var width = a.Opt(0, "width", 4L);
        bool first = Py.Truthy(a.Opt(1, "first", false));
        bool blank = Py.Truthy(a.Opt(2, "blank", false));
        a.Done(3);
        string indention = width is string ws ? ws : new string(' ', (int)Math.Max(0, Py.ToLong(width)));
        var lines = Methods.SplitLines(Py.Str(v) + "\n", keepEnds: false);
        string rv;
        if (blank) rv = string.Join("\n" + indention, lines);
        else
        {
            rv = lines[0];
            if (lines.Count > 1) rv += "\n" + string.Join("\n", lines.Skip(1).Select(l => l.Length > 0 ? indention + l : l));
        }
        return Interpreter.CheckSize(first ? indention + rv : rv);
    }

    private static string Escape(string s) =>
        s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;");

    /// <summary>Python's time.strftime for the directives chat templates use (glibc's "%-d" style included).</summary>
    public static string Strftime(DateTime t, string format)
    {
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length) { sb.Append(format[i]); continue; }
            char c = format[++i];
            bool noPad = false;
            if (c == '-' && i + 1 < format.Length) { noPad = true; c = format[++i]; }
            string Pad(int n, int w) => noPad ? n.ToString(ci) : n.ToString(new string('0', w), ci);
            sb.Append(c switch
            {
                'a' => t.ToString("ddd", ci),
                'A' => t.ToString("dddd", ci),
                'b' or 'h' => t.ToString("MMM", ci),
                'B' => t.ToString("MMMM", ci),
                'd' => Pad(t.Day, 2),
                'e' => noPad ? t.Day.ToString(ci) : t.Day.ToString(ci).PadLeft(2),
                'm' => Pad(t.Month, 2),
                'y' => Pad(t.Year % 100, 2),
                'Y' => t.Year.ToString(ci),
                'H' => Pad(t.Hour, 2),
                'I' => Pad(t.Hour % 12 == 0 ? 12 : t.Hour % 12, 2),
                'M' => Pad(t.Minute, 2),
                'S' => Pad(t.Second, 2),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'j' => Pad(t.DayOfYear, 3),
                'F' => t.ToString("yyyy-MM-dd", ci),
                'T' => t.ToString("HH:mm:ss", ci),
                'D' => t.ToString("MM/dd/yy", ci),
                'R' => t.ToString("HH:mm", ci),
                'u' => (t.DayOfWeek == DayOfWeek.Sunday ? 7 : (int)t.DayOfWeek).ToString(ci),
                'w' => ((int)t.DayOfWeek).ToString(ci),
                'n' => "\n",
                't' => "\t",
                '%' => "%",
                _ => throw new TemplateError($"strftime directive '%{c}' is not supported"),
            });
        }
        return sb.ToString();
    }

    [GeneratedRegex(@"([-\s({\[<]+)")]
    private static partial Regex TitleSplit();

    [GeneratedRegex(@"\w+")]
    private static partial Regex WordRegex();
}
