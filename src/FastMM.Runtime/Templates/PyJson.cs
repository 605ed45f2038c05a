using System.Text;

namespace FastMM.Runtime.Templates;

/// <summary>Python's json.dumps as transformers' tojson filter calls it (ensure_ascii=False by default, keys unsorted).</summary>
internal static class PyJson
{
    public static string Dumps(object? value, bool ensureAscii, object? indent, object? separators, bool sortKeys)
    {
        string? indentText = indent switch
        {
            null => null,
            string s => s,
            long or bool => new string(' ', (int)Math.Clamp(Py.ToLong(indent), 0, 1000)),
            _ => throw new TemplateError($"tojson indent must be an int or str, got {Py.TypeName(indent)}"),
        };
        string itemSep = indentText is null ? ", " : ",", keySep = ": ";
        if (separators is List<object?> { Count: 2 } seps && seps[0] is string i0 && seps[1] is string k0) { itemSep = i0; keySep = k0; }
        else if (separators is not null) throw new TemplateError("tojson separators must be a pair of strings");
        var sb = new StringBuilder();
        Write(sb, value, ensureAscii, indentText, itemSep, keySep, sortKeys, 0);
        return sb.ToString();
    }

    private static void NewLine(StringBuilder sb, string? indent, int level)
    {
        if (indent is null) return;
        sb.Append('\n');
        for (int i = 0; i < level; i++) sb.Append(indent);
    }

    private static void Write(StringBuilder sb, object? v, bool ascii, string? indent, string itemSep, string keySep, bool sortKeys, int level)
    {
        if (level > 100) throw new TemplateError("tojson: value nested too deeply");
        if (sb.Length > Interpreter.MaxOutputChars) throw new TemplateError($"template output exceeds {Interpreter.MaxOutputChars} characters");
        switch (v)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(Py.Str(l)); break;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : Py.FormatFloat(d));
                break;
            case string s: WriteString(sb, s, ascii); break;
            case List<object?> list:
                if (list.Count == 0) { sb.Append("[]"); break; }
                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0) sb.Append(itemSep);
                    NewLine(sb, indent, level + 1);
                    Write(sb, list[i], ascii, indent, itemSep, keySep, sortKeys, level + 1);
                }
                NewLine(sb, indent, level);
                sb.Append(']');
                break;
            case OrderedDictionary<string, object?> dict:
                if (dict.Count == 0) { sb.Append("{}"); break; }
                sb.Append('{');
                IEnumerable<KeyValuePair<string, object?>> entries = dict;
                if (sortKeys) entries = dict.OrderBy(kv => kv.Key, Comparer<string>.Create(Py.CompareCodePoints));
                bool first = true;
                foreach (var kv in entries)
                {
                    if (!first) sb.Append(itemSep);
                    first = false;
                    NewLine(sb, indent, level + 1);
                    WriteString(sb, kv.Key, ascii);
                    sb.Append(keySep);
                    Write(sb, kv.Value, ascii, indent, itemSep, keySep, sortKeys, level + 1);
                }
                NewLine(sb, indent, level);
                sb.Append('}');
                break;
            default:
                throw new TemplateError($"Object of type {Py.TypeName(v)} is not JSON serializable");
        }
    }

    private static void WriteString(StringBuilder sb, string s, bool ascii)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    // Python escapes controls always, and everything outside ' '..'~' only when ensure_ascii.
                    if (c < 0x20 || (ascii && c > 0x7e)) sb.Append("\\u").Append(((int)c).ToString("x4"));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
