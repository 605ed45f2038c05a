using System.Text.Json;

namespace FastMM.Runtime.Tokenizers;

/// <summary>A JSON element that remembers its file and JSON path, so every config error names both.</summary>
internal readonly struct ConfigNode
{
    public readonly JsonElement Element;
    public readonly string Path;
    public readonly string File;

    public ConfigNode(JsonElement element, string path, string file)
    {
        Element = element;
        Path = path;
        File = file;
    }

    public JsonValueKind Kind => Element.ValueKind;

    public FastMMException Error(string message) => new($"{File}: {Path}: {message}");

    private string Child(string name) => Path.Length == 0 ? name : $"{Path}.{name}";

    /// <summary>The child, or null when absent or JSON null.</summary>
    public ConfigNode? Opt(string name)
    {
        if (Element.ValueKind == JsonValueKind.Object && Element.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null)
            return new ConfigNode(v, Child(name), File);
        return null;
    }

    public ConfigNode Req(string name) => Opt(name) ?? throw new FastMMException($"{File}: {Child(name)} is missing");

    public string Str(string name)
    {
        var n = Req(name);
        return n.Kind == JsonValueKind.String ? n.Element.GetString()! : throw n.Error("expected a string");
    }

    public string? OptStr(string name)
    {
        var n = Opt(name);
        if (n is null) return null;
        return n.Value.Kind == JsonValueKind.String ? n.Value.Element.GetString() : throw n.Value.Error("expected a string");
    }

    public bool Bool(string name, bool fallback)
    {
        var n = Opt(name);
        if (n is null) return fallback;
        return n.Value.Kind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw n.Value.Error("expected true or false"),
        };
    }

    public int? OptInt(string name)
    {
        var n = Opt(name);
        if (n is null) return null;
        return n.Value.Kind == JsonValueKind.Number && n.Value.Element.TryGetInt32(out int v) ? v : throw n.Value.Error("expected an integer");
    }

    public int Int(string name) => OptInt(name) ?? throw new FastMMException($"{File}: {Child(name)} is missing");

    public int AsInt() => Kind == JsonValueKind.Number && Element.TryGetInt32(out int v) ? v : throw Error("expected an integer");

    public double AsDouble() => Kind == JsonValueKind.Number ? Element.GetDouble() : throw Error("expected a number");

    public string AsString() => Kind == JsonValueKind.String ? Element.GetString()! : throw Error("expected a string");

    public IEnumerable<ConfigNode> Items()
    {
        if (Kind != JsonValueKind.Array) throw Error("expected an array");
        int i = 0;
        foreach (var e in Element.EnumerateArray())
            yield return new ConfigNode(e, $"{Path}[{i++}]", File);
    }

    public IEnumerable<(string Name, ConfigNode Value)> Properties()
    {
        if (Kind != JsonValueKind.Object) throw Error("expected an object");
        foreach (var p in Element.EnumerateObject())
            yield return (p.Name, new ConfigNode(p.Value, Child(p.Name), File));
    }

    /// <summary>The component's "type", failing with the file and path when missing.</summary>
    public string TypeName() => Str("type");

    public FastMMException Unsupported(string type) => new($"{File}: {Child("type")} '{type}' is not supported");
}
