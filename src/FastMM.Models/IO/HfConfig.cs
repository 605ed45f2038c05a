using System.Text.Json;

namespace FastMM.Models.IO;

/// <summary>
/// Read access to an HF config.json (or a sub-config such as text_config) that names the file and the
/// field path in every error. HF omits fields equal to the class defaults, so callers pass the defaults.
/// </summary>
public sealed class HfConfig
{
    private readonly JsonElement _root;
    public string File { get; }
    public string Path { get; }

    private HfConfig(string file, string path, JsonElement root) { File = file; Path = path; _root = root; }

    public static HfConfig Load(string file)
    {
        using var doc = ParseJsonFile(file);
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new FastMMException($"{file}: must contain a JSON object");
        return new HfConfig(file, "", doc.RootElement.Clone());
    }

    internal static JsonDocument ParseJsonFile(string file)
    {
        if (!System.IO.File.Exists(file)) throw new FastMMException($"{file}: not found");
        try { return JsonDocument.Parse(System.IO.File.ReadAllBytes(file), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }); }
        catch (JsonException e) { throw new FastMMException($"{file}: not valid JSON ({e.Message})"); }
    }

    private string Field(string name) => Path.Length == 0 ? name : $"{Path}.{name}";
    private string Where(string name) => $"{System.IO.Path.GetFileName(File)}: {Field(name)}";

    public bool Has(string name) => _root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null;

    private bool TryGet(string name, out JsonElement v) => _root.TryGetProperty(name, out v) && v.ValueKind != JsonValueKind.Null;

    public HfConfig Section(string name)
    {
        if (!TryGet(name, out var v)) return new HfConfig(File, Field(name), JsonDocument.Parse("{}").RootElement.Clone());
        if (v.ValueKind != JsonValueKind.Object) throw new FastMMException($"{Where(name)} must be an object");
        return new HfConfig(File, Field(name), v);
    }

    public string String(string name, string? fallback = null)
    {
        if (TryGet(name, out var v))
            return v.ValueKind == JsonValueKind.String ? v.GetString()! : throw new FastMMException($"{Where(name)} must be a string, got {v.GetRawText()}");
        return fallback ?? throw new FastMMException($"{Where(name)} is missing");
    }

    public int Int(string name, int? fallback = null, int min = int.MinValue, int max = int.MaxValue)
    {
        int value;
        if (TryGet(name, out var v))
        {
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out value)) throw new FastMMException($"{Where(name)} must be an integer, got {v.GetRawText()}");
        }
        else value = fallback ?? throw new FastMMException($"{Where(name)} is missing");
        if (value < min || value > max) throw new FastMMException($"{Where(name)} = {value} is out of range [{min}, {max}]");
        return value;
    }

    public float Float(string name, float? fallback = null)
    {
        if (TryGet(name, out var v))
            return v.ValueKind == JsonValueKind.Number ? v.GetSingle() : throw new FastMMException($"{Where(name)} must be a number, got {v.GetRawText()}");
        return fallback ?? throw new FastMMException($"{Where(name)} is missing");
    }

    public bool Bool(string name, bool fallback)
    {
        if (!TryGet(name, out var v)) return fallback;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new FastMMException($"{Where(name)} must be true or false, got {v.GetRawText()}"),
        };
    }

    /// <summary>Fails with the file and field named (for consistency checks between fields).</summary>
    public FastMMException Error(string name, string problem) => new($"{Where(name)} {problem}");
}
