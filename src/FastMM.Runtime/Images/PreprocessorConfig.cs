using System.Text.Json;

namespace FastMM.Runtime.Images;

/// <summary>
/// Typed, validating access to a preprocessor_config.json. Every error names the file and the field, so a bad config
/// is diagnosed from the message alone.
/// </summary>
public sealed class PreprocessorConfig
{
    private readonly JsonElement _root;

    /// <summary>The file (or label) used in error messages.</summary>
    public string Source { get; }

    private PreprocessorConfig(JsonElement root, string source)
    {
        _root = root;
        Source = source;
    }

    public static PreprocessorConfig Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path))
            throw new FastMMException($"Preprocessor config '{path}': is a directory, not a JSON file.");
        if (!File.Exists(path))
            throw new FastMMException($"Preprocessor config '{path}': file not found.");
        string json;
        try { json = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FastMMException($"Preprocessor config '{path}': cannot be read ({e.Message}).", e);
        }
        return Parse(json, path);
    }

    public static PreprocessorConfig Parse(string json, string source)
    {
        try
        {
            using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new FastMMException($"Preprocessor config '{source}': expected a JSON object at the top level, found {doc.RootElement.ValueKind}.");
            return new PreprocessorConfig(doc.RootElement.Clone(), source);
        }
        catch (JsonException e)
        {
            throw new FastMMException($"Preprocessor config '{source}': invalid JSON ({e.Message}).", e);
        }
    }

    /// <summary>The parsed JSON object, for processors with nested fields the typed getters do not cover.</summary>
    internal JsonElement Root => _root;

    public bool Has(string field) => _root.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null;

    /// <summary>The processor class name from "image_processor_type" or, for older configs, "feature_extractor_type".</summary>
    public string? ProcessorType =>
        GetOptionalString("image_processor_type") ?? GetOptionalString("feature_extractor_type");

    public string? GetOptionalString(string field)
    {
        if (!TryGet(field, out var v)) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw Bad(field, "a string", v);
    }

    public bool GetBool(string field, bool defaultValue)
    {
        if (!TryGet(field, out var v)) return defaultValue;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Bad(field, "true or false", v),
        };
    }

    public double GetDouble(string field, double defaultValue)
    {
        if (!TryGet(field, out var v)) return defaultValue;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d) || !double.IsFinite(d))
            throw Bad(field, "a finite number", v);
        return d;
    }

    public ResampleFilter GetResample(string field, ResampleFilter defaultValue)
    {
        if (!TryGet(field, out var v)) return defaultValue;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i) || i is < 0 or > 5)
            throw Bad(field, "a PIL resampling filter 0..5 (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)", v);
        return (ResampleFilter)i;
    }

    /// <summary>A per-channel float list (or one number for all channels, as HF accepts); required.</summary>
    public float[] GetChannelValues(string field, bool mustBePositive)
    {
        if (!TryGet(field, out var v)) throw Missing(field);
        double[] values = v.ValueKind switch
        {
            JsonValueKind.Number => [ReadNumber(field, v), ReadNumber(field, v), ReadNumber(field, v)],
            JsonValueKind.Array when v.GetArrayLength() == 3 => v.EnumerateArray().Select(e => ReadNumber(field, e)).ToArray(),
            _ => throw Bad(field, "a list of 3 numbers (one per RGB channel)", v),
        };
        if (mustBePositive && values.Any(x => x <= 0))
            throw new FastMMException($"Preprocessor config '{Source}': field '{field}' must be positive (it divides), got [{string.Join(", ", values)}].");
        // numpy casts mean/std to the image dtype (float32) before normalizing.
        return values.Select(x => (float)x).ToArray();
    }

    /// <summary>
    /// A size field in any of HF's forms: an int (meaning depends on the processor: <paramref name="intIsShortestEdge"/>),
    /// {"shortest_edge": n} or {"height": h, "width": w}.
    /// </summary>
    public SizeSpec GetSize(string field, bool intIsShortestEdge)
    {
        if (!TryGet(field, out var v)) throw Missing(field);
        if (v.ValueKind == JsonValueKind.Number)
        {
            int n = ReadPositiveInt(field, v);
            return intIsShortestEdge ? SizeSpec.Shortest(n) : SizeSpec.Exact(n, n);
        }
        if (v.ValueKind != JsonValueKind.Object)
            throw Bad(field, "an integer or an object with \"shortest_edge\" or \"height\" and \"width\"", v);

        bool hasH = v.TryGetProperty("height", out var h), hasW = v.TryGetProperty("width", out var w);
        if (hasH && hasW)
            return SizeSpec.Exact(ReadPositiveInt(field + ".height", h), ReadPositiveInt(field + ".width", w));
        if (v.TryGetProperty("shortest_edge", out var s))
        {
            if (v.TryGetProperty("longest_edge", out var l) && l.ValueKind != JsonValueKind.Null)
                throw new FastMMException($"Preprocessor config '{Source}': field '{field}.longest_edge' is not supported by this processor.");
            return SizeSpec.Shortest(ReadPositiveInt(field + ".shortest_edge", s));
        }
        throw Bad(field, "an object with \"shortest_edge\" or both \"height\" and \"width\"", v);
    }

    public FastMMException Missing(string field) =>
        new($"Preprocessor config '{Source}': required field '{field}' is missing.");

    private bool TryGet(string field, out JsonElement value) =>
        _root.TryGetProperty(field, out value) && value.ValueKind != JsonValueKind.Null;

    private double ReadNumber(string field, JsonElement v)
    {
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d) || !double.IsFinite(d))
            throw Bad(field, "numbers", v);
        return d;
    }

    private int ReadPositiveInt(string field, JsonElement v)
    {
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n) || n <= 0 || n > 65536)
            throw Bad(field, "a positive integer (at most 65536)", v);
        return n;
    }

    private FastMMException Bad(string field, string expected, JsonElement actual)
    {
        string shown = actual.GetRawText();
        if (shown.Length > 80) shown = shown[..80] + "...";
        return new FastMMException($"Preprocessor config '{Source}': field '{field}' must be {expected}, got {shown}.");
    }
}

/// <summary>A target size: either exact (height, width) or "shortest edge = n, keep aspect ratio".</summary>
public readonly record struct SizeSpec(int Height, int Width, int ShortestEdge)
{
    public bool IsShortestEdge => ShortestEdge > 0;
    public static SizeSpec Exact(int height, int width) => new(height, width, 0);
    public static SizeSpec Shortest(int edge) => new(0, 0, edge);

    /// <summary>The (height, width) an image of the given size is resized to.</summary>
    public (int Height, int Width) Resolve(int height, int width) =>
        IsShortestEdge ? ImageTransforms.ShortestEdgeSize(height, width, ShortestEdge) : (Height, Width);

    public override string ToString() => IsShortestEdge ? $"shortest_edge={ShortestEdge}" : $"{Height}x{Width}";
}
