using System.Globalization;
using System.Text;

namespace FastMM.Runtime.Templates;

/// <summary>
/// jinja2's sandboxed getattr/getitem: x.name tries the Python attribute first (methods such as dict.items) and
/// then the item; x[key] tries the item first and then, for string keys, the attribute. Misses give Undefined;
/// anything on Undefined fails. Mutating methods are refused, as in ImmutableSandboxedEnvironment.
/// </summary>
internal static class Access
{
    private static readonly HashSet<string> StrMethods =
    [
        "startswith", "endswith", "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "upper", "lower", "title",
        "capitalize", "replace", "find", "rfind", "index", "rindex", "count", "join", "isdigit", "isalpha", "isalnum", "isspace",
        "isupper", "islower", "isnumeric", "isdecimal", "istitle", "swapcase", "casefold", "zfill", "format", "center", "ljust", "rjust",
        "partition", "rpartition", "removeprefix", "removesuffix", "encode", "expandtabs", "format_map", "translate", "maketrans",
        "isidentifier", "isprintable", "isascii",
    ];
    private static readonly HashSet<string> DictMethods = ["keys", "values", "items", "get", "copy", "fromkeys"];
    private static readonly HashSet<string> DictUnsafe = ["pop", "popitem", "setdefault", "update", "clear"];
    private static readonly HashSet<string> ListMethods = ["index", "count", "copy"];
    private static readonly HashSet<string> ListUnsafe = ["append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"];

    private static string ObjectRepr(object? obj) => obj is null ? "None" : $"{Py.TypeName(obj)} object";

    public static object? GetAttr(object? obj, string name)
    {
        if (obj is Undefined u) throw u.Fail();
        if (TryAttr(obj, name, out var value)) return value;
        if (TryItem(obj, name, out value)) return value;
        return new Undefined($"'{ObjectRepr(obj)}' has no attribute '{name}'");
    }

    public static object? GetItem(object? obj, object? key)
    {
        if (obj is Undefined u) throw u.Fail();
        if (TryItem(obj, key, out var value)) return value;
        if (key is string s)
        {
            if (TryAttr(obj, s, out value)) return value;
            return new Undefined($"'{ObjectRepr(obj)}' has no attribute '{s}'");
        }
        return new Undefined($"{ObjectRepr(obj)} has no element {Py.Repr(key)}");
    }

    private static bool TryAttr(object? obj, string name, out object? value)
    {
        value = null;
        switch (obj)
        {
            case string when StrMethods.Contains(name):
                value = new BoundMethod(obj, name);
                return true;
            case OrderedDictionary<string, object?>:
                if (DictUnsafe.Contains(name)) throw new TemplateError($"access to attribute '{name}' of 'dict' object is unsafe");
                if (!DictMethods.Contains(name)) return false;
                value = new BoundMethod(obj, name);
                return true;
            case List<object?> l:
                if (ListUnsafe.Contains(name) && l is not PyTuple) throw new TemplateError($"access to attribute '{name}' of 'list' object is unsafe");
                if (!ListMethods.Contains(name) || (l is PyTuple && name == "copy")) return false;
                value = new BoundMethod(obj, name);
                return true;
            case Namespace ns:
                return ns.Attributes.TryGetValue(name, out value);
            case LoopContext loop:
                value = loop.Get(name);
                return value is not Undefined;
            default:
                return false;
        }
    }

    private static bool TryItem(object? obj, object? key, out object? value)
    {
        value = null;
        switch (obj)
        {
            case OrderedDictionary<string, object?> d:
                return key is string k && d.TryGetValue(k, out value);
            case List<object?> l when key is long or bool:
            {
                long i = Py.ToLong(key);
                if (i < 0) i += l.Count;
                if (i < 0 || i >= l.Count) return false;
                value = l[(int)i];
                return true;
            }
            case string s when key is long or bool:
            {
                var cps = Py.CodePoints(s);
                long i = Py.ToLong(key);
                if (i < 0) i += cps.Count;
                if (i < 0 || i >= cps.Count) return false;
                value = cps[(int)i];
                return true;
            }
            default:
                return false;
        }
    }

    /// <summary>Python slicing obj[start:stop:step] on lists, tuples and strings (by code point).</summary>
    public static object? Slice(object? obj, object? start, object? stop, object? step)
    {
        if (obj is Undefined u) throw u.Fail();
        long? Index(object? v, string what) => v switch
        {
            null => null,
            long or bool => Py.ToLong(v),
            _ => throw new TemplateError($"slice {what} must be an integer or None, got {Py.TypeName(v)}"),
        };
        long st = Index(step, "step") ?? 1;
        if (st == 0) throw new TemplateError("slice step cannot be zero");
        List<object?> items = obj switch
        {
            string s => Py.CodePoints(s).Cast<object?>().ToList(),
            List<object?> l => l,
            _ => throw new TemplateError($"'{Py.TypeName(obj)}' object is not subscriptable"),
        };
        int n = items.Count;
        long Clamp(long? v, long dflt, bool isStart)
        {
            if (v is null) return dflt;
            long x = v.Value < 0 ? v.Value + n : v.Value;
            if (st > 0) return Math.Clamp(x, 0, n);
            return Math.Clamp(x, -1, n - 1);
        }
        long a = Clamp(Index(start, "start"), st > 0 ? 0 : n - 1, true);
        long b = Clamp(Index(stop, "stop"), st > 0 ? n : -1, false);
        var result = new List<object?>();
        if (st > 0) for (long i = a; i < b; i += st) result.Add(items[(int)i]);
        else for (long i = a; i > b; i += st) result.Add(items[(int)i]);
        return obj switch
        {
            string => string.Concat(result.Cast<string>()),
            PyTuple => new PyTuple(result),
            _ => result,
        };
    }
}

/// <summary>The Python str/dict/list methods templates call (s.strip(), d.items(), ...).</summary>
internal static class Methods
{
    public static object? Call(object self, string name, List<object?> args, List<KeyValuePair<string, object?>> kwargs)
    {
        var a = new ArgReader($"{Py.TypeName(self)}.{name}", args, kwargs);
        switch (self)
        {
            case string s: return CallStr(s, name, a);
            case OrderedDictionary<string, object?> d: return CallDict(d, name, a);
            case List<object?> l: return CallList(l, name, a);
            case LoopContext loop when name == "cycle": return loop.Cycle(args);
        }
        throw new TemplateError($"method '{name}' of '{Py.TypeName(self)}' is not supported");
    }

    private static object? CallDict(OrderedDictionary<string, object?> d, string name, ArgReader a)
    {
        switch (name)
        {
            case "keys": a.Done(0); return d.Keys.Cast<object?>().ToList();
            case "values": a.Done(0); return d.Values.ToList();
            case "items": a.Done(0); return d.Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList();
            case "get":
            {
                var key = a.Req(0, "key");
                var dflt = a.Opt(1, "default", null);
                a.Done(2);
                return key is string k && d.TryGetValue(k, out var v) ? v : dflt;
            }
            case "copy": a.Done(0); return new OrderedDictionary<string, object?>(d, StringComparer.Ordinal);
        }
        throw new TemplateError($"method 'dict.{name}' is not supported");
    }

    private static object? CallList(List<object?> l, string name, ArgReader a)
    {
        switch (name)
        {
            case "count": { var x = a.Req(0, "value"); a.Done(1); return (long)l.Count(v => Py.Eq(v, x)); }
            case "index":
            {
                var x = a.Req(0, "value");
                a.Done(1);
                int i = l.FindIndex(v => Py.Eq(v, x));
                return i >= 0 ? (long)i : throw new TemplateError($"{Py.Repr(x)} is not in list");
            }
            case "copy": a.Done(0); return l.ToList();
        }
        throw new TemplateError($"method 'list.{name}' is not supported");
    }

    private static string? Chars(ArgReader a, int i, string name)
    {
        var v = a.Opt(i, name, null);
        return v switch { null => null, string s => s, _ => throw new TemplateError($"{a.What} arg must be None or str") };
    }

    public static string Strip(string s, string? chars, bool left, bool right)
    {
        int start = 0, end = s.Length;
        Func<char, bool> strip = chars is null ? Py.IsSpace : chars.Contains;
        if (left) while (start < end && strip(s[start])) start++;
        if (right) while (end > start && strip(s[end - 1])) end--;
        return s[start..end];
    }

    private static object? CallStr(string s, string name, ArgReader a)
    {
        switch (name)
        {
            case "strip": { var c = Chars(a, 0, "chars"); a.Done(1); return Strip(s, c, true, true); }
            case "lstrip": { var c = Chars(a, 0, "chars"); a.Done(1); return Strip(s, c, true, false); }
            case "rstrip": { var c = Chars(a, 0, "chars"); a.Done(1); return Strip(s, c, false, true); }
            case "upper": a.Done(0); return s.ToUpperInvariant();
            case "lower": a.Done(0); return s.ToLowerInvariant();
            case "capitalize": a.Done(0); return Capitalize(s);
            case "title": a.Done(0); return PyTitle(s);
            case "swapcase": a.Done(0); return string.Concat(s.Select(ch => char.IsUpper(ch) ? char.ToLowerInvariant(ch) : char.ToUpperInvariant(ch)));
            case "startswith" or "endswith":
            {
                var prefix = a.Req(0, "prefix");
                var start = a.Opt(1, "start", null);
                var end = a.Opt(2, "end", null);
                a.Done(3);
                string sub = start is null && end is null ? s : (string)Access.Slice(s, start, end, null)!;
                IEnumerable<object?> options = prefix is PyTuple t ? t : [prefix];
                foreach (var o in options)
                {
                    if (o is not string p) throw new TemplateError($"{name} first arg must be str or a tuple of str, not {Py.TypeName(o)}");
                    if (name == "startswith" ? sub.StartsWith(p, StringComparison.Ordinal) : sub.EndsWith(p, StringComparison.Ordinal)) return true;
                }
                return false;
            }
            case "split" or "rsplit":
            {
                var sep = Chars(a, 0, "sep");
                long max = a.Opt(1, "maxsplit", -1L) is long m ? m : throw new TemplateError("maxsplit must be an integer");
                a.Done(2);
                return Split(s, sep, max, name == "rsplit").Cast<object?>().ToList();
            }
            case "splitlines": { var keep = Py.Truthy(a.Opt(0, "keepends", false)); a.Done(1); return SplitLines(s, keep).Cast<object?>().ToList(); }
            case "replace":
            {
                var old = a.Req(0, "old") as string ?? throw new TemplateError("replace() argument 1 must be str");
                var @new = a.Req(1, "new") as string ?? throw new TemplateError("replace() argument 2 must be str");
                long count = a.Opt(2, "count", -1L) is long c ? c : -1;
                a.Done(3);
                return Replace(s, old, @new, count);
            }
            case "find" or "rfind" or "index" or "rindex":
            {
                var sub = a.Req(0, "sub") as string ?? throw new TemplateError($"{name}() argument must be str");
                a.Done(1);
                int i = name is "find" or "index" ? s.IndexOf(sub, StringComparison.Ordinal) : s.LastIndexOf(sub, StringComparison.Ordinal);
                if (i < 0 && name is "index" or "rindex") throw new TemplateError("substring not found");
                return i < 0 ? -1L : (long)Py.StrLen(s[..i]);
            }
            case "count":
            {
                var sub = a.Req(0, "sub") as string ?? throw new TemplateError("count() argument must be str");
                a.Done(1);
                if (sub.Length == 0) return (long)Py.StrLen(s) + 1;
                long n = 0;
                for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++;
                return n;
            }
            case "join":
            {
                var items = Py.Iterate(a.Req(0, "iterable")).ToList();
                a.Done(1);
                if (items.Any(x => x is not string)) throw new TemplateError("sequence item: expected str instance");
                return Interpreter.CheckSize(string.Join(s, items.Cast<string>()));
            }
            case "isdigit" or "isdecimal" or "isnumeric": a.Done(0); return s.Length > 0 && s.All(char.IsDigit);
            case "isalpha": a.Done(0); return s.Length > 0 && s.All(char.IsLetter);
            case "isalnum": a.Done(0); return s.Length > 0 && s.All(char.IsLetterOrDigit);
            case "isspace": a.Done(0); return s.Length > 0 && s.All(Py.IsSpace);
            case "isupper": a.Done(0); return s.Any(char.IsLetter) && !s.Any(char.IsLower) && s.Any(char.IsUpper);
            case "islower": a.Done(0); return s.Any(char.IsLetter) && !s.Any(char.IsUpper) && s.Any(char.IsLower);
            case "removeprefix": { var p = a.Req(0, "prefix") as string ?? ""; a.Done(1); return s.StartsWith(p, StringComparison.Ordinal) ? s[p.Length..] : s; }
            case "removesuffix": { var p = a.Req(0, "suffix") as string ?? ""; a.Done(1); return p.Length > 0 && s.EndsWith(p, StringComparison.Ordinal) ? s[..^p.Length] : s; }
        }
        throw new TemplateError($"method 'str.{name}' is not supported");
    }

    public static string Capitalize(string s) =>
        s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    /// <summary>Python's str.title(): a cased letter after an uncased character starts a word.</summary>
    public static string PyTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool prevCased = false;
        foreach (char c in s)
        {
            sb.Append(prevCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            prevCased = char.IsUpper(c) || char.IsLower(c) || char.GetUnicodeCategory(c) == UnicodeCategory.TitlecaseLetter;
        }
        return sb.ToString();
    }

    public static string Replace(string s, string old, string @new, long count)
    {
        if (count == 0) return s;
        var sb = new StringBuilder();
        if (old.Length == 0)
        {
            // Python inserts the replacement before every code point and at the end.
            var cps = Py.CodePoints(s);
            long done = 0;
            foreach (var cp in cps)
            {
                if (count < 0 || done < count) { sb.Append(@new); done++; }
                sb.Append(cp);
            }
            if (count < 0 || done < count) sb.Append(@new);
            return Interpreter.CheckSize(sb.ToString());
        }
        int pos = 0;
        long n = 0;
        while (count < 0 || n < count)
        {
            int i = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (i < 0) break;
            sb.Append(s, pos, i - pos).Append(@new);
            if (sb.Length > Interpreter.MaxOutputChars) throw new TemplateError($"template output exceeds {Interpreter.MaxOutputChars} characters");
            pos = i + old.Length;
            n++;
        }
        sb.Append(s, pos, s.Length - pos);
        return Interpreter.CheckSize(sb.ToString());
    }

    public static List<string> Split(string s, string? sep, long maxsplit, bool fromRight)
    {
        if (sep is not null && sep.Length == 0) throw new TemplateError("empty separator");
        var parts = new List<string>();
        if (sep is null)
        {
            // Runs of whitespace separate; leading/trailing whitespace yields no empty parts.
            var words = new List<(int Start, int End)>();
            int i = 0;
            while (i < s.Length)
            {
                while (i < s.Length && Py.IsSpace(s[i])) i++;
                if (i >= s.Length) break;
                int st = i;
                while (i < s.Length && !Py.IsSpace(s[i])) i++;
                words.Add((st, i));
            }
            if (maxsplit < 0 || words.Count <= maxsplit + 1) return words.Select(w => s[w.Start..w.End]).ToList();
            if (!fromRight)
            {
                for (int k = 0; k < maxsplit; k++) parts.Add(s[words[k].Start..words[k].End]);
                parts.Add(s[words[(int)maxsplit].Start..]); // Python keeps the remainder's trailing whitespace
            }
            else
            {
                int firstKept = words.Count - (int)maxsplit;
                parts.Add(s[..words[firstKept - 1].End]);
                for (int k = firstKept; k < words.Count; k++) parts.Add(s[words[k].Start..words[k].End]);
            }
            return parts;
        }
        var all = s.Split(sep);
        if (maxsplit < 0 || all.Length <= maxsplit + 1) return all.ToList();
        if (!fromRight)
        {
            parts.AddRange(all.Take((int)maxsplit));
            parts.Add(string.Join(sep, all.Skip((int)maxsplit)));
        }
        else
        {
            parts.Add(string.Join(sep, all.Take(all.Length - (int)maxsplit)));
            parts.AddRange(all.Skip(all.Length - (int)maxsplit));
        }
        return parts;
    }

    private static bool IsLineBreak(char c) => c is '\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029';

    /// <summary>Python's str.splitlines (all of its line boundaries, \r\n as one).</summary>
    public static List<string> SplitLines(string s, bool keepEnds)
    {
        var lines = new List<string>();
        int start = 0, i = 0;
        while (i < s.Length)
        {
            if (!IsLineBreak(s[i])) { i++; continue; }
            int eol = i;
            i += s[i] == '\r' && i + 1 < s.Length && s[i + 1] == '\n' ? 2 : 1;
            lines.Add(keepEnds ? s[start..i] : s[start..eol]);
            start = i;
        }
        if (start < s.Length) lines.Add(s[start..]);
        return lines;
    }
}

/// <summary>Binds positional and keyword arguments by parameter position/name, like a Python signature.</summary>
internal sealed class ArgReader(string what, List<object?> args, List<KeyValuePair<string, object?>> kwargs)
{
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);
    public string What => what;
    public int PositionalCount => args.Count;

    public object? Opt(int index, string name, object? dflt)
    {
        _used.Add(name);
        var kw = kwargs.FindIndex(k => k.Key == name);
        if (index < args.Count)
        {
            if (kw >= 0) throw new TemplateError($"{what}() got multiple values for argument '{name}'");
            return args[index];
        }
        return kw >= 0 ? kwargs[kw].Value : dflt;
    }

    public object? Req(int index, string name)
    {
        _used.Add(name);
        if (index >= args.Count && kwargs.FindIndex(k => k.Key == name) < 0)
            throw new TemplateError($"{what}() missing required argument '{name}'");
        return Opt(index, name, null);
    }

    /// <summary>Fails on extra positional arguments or unknown keywords.</summary>
    public void Done(int positional)
    {
        if (args.Count > positional) throw new TemplateError($"{what}() takes at most {positional} positional argument(s) ({args.Count} given)");
        foreach (var kw in kwargs)
            if (!_used.Contains(kw.Key)) throw new TemplateError($"{what}() got an unexpected keyword argument '{kw.Key}'");
    }

    public IEnumerable<object?> Rest(int from) => args.Skip(from);
}
