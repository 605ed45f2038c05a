using System.Text;
using System.Text.Json;

namespace FastMM.Runtime.Images;

/// <summary>The literal token strings Idefics3Processor writes around each image.</summary>
public sealed record Idefics3PromptTokens(
    string FakeImageToken = "<fake_token_around_image>",
    string ImageToken = "<image>",
    string GlobalImageToken = "<global-img>")
{
    public static Idefics3PromptTokens Default { get; } = new();
}

/// <summary>
/// HF Idefics3Processor's text side (processing_idefics3.py): each image placeholder in the prompt becomes the image's
/// token layout, built from its tile grid (<see cref="Idefics3ImageProcessor"/>) and the per-frame token count.
/// </summary>
public static class Idefics3PromptLayout
{
    /// <summary>Idefics3Processor's default image_seq_len (Idefics3-8B: 364px tiles, patch 14, scale factor 2).</summary>
    public const int DefaultImageSeqLen = 169;

    /// <summary>
    /// Replaces the i-th image token in <paramref name="text"/> with the layout of <paramref name="grids"/>[i]. As in
    /// HF, the text is split on the image token and the pieces re-joined around each image's layout; the counts must
    /// match (HF raises too).
    /// </summary>
    public static string Expand(string text, IReadOnlyList<(int Rows, int Cols)> grids, int imageSeqLen, Idefics3PromptTokens? tokens = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(grids);
        tokens ??= Idefics3PromptTokens.Default;
        if (tokens.ImageToken.Length == 0)
            throw new ArgumentException("The image token must not be empty.", nameof(tokens));

        string[] pieces = text.Split(tokens.ImageToken);
        if (pieces.Length - 1 != grids.Count)
            throw new FastMMException(
                $"The prompt has {pieces.Length - 1} {tokens.ImageToken} placeholder(s) but {grids.Count} image(s) were given; they must match.");

        var sb = new StringBuilder(pieces[0]);
        for (int i = 0; i < grids.Count; i++)
        {
            AppendImage(sb, grids[i].Rows, grids[i].Cols, imageSeqLen, tokens);
            sb.Append(pieces[i + 1]);
        }
        return sb.ToString();
    }

    /// <summary>
    /// One image's expansion: HF <c>get_image_prompt_string</c>. A (0, 0) grid is an unsplit image
    /// (<c>_prompt_single_image</c>); otherwise each tile is <c>&lt;row_r_col_c&gt;</c>-tagged, every row ends with a
    /// newline, and the global image follows after one more newline (<c>_prompt_split_image</c>).
    /// </summary>
    public static string ImagePrompt(int rows, int cols, int imageSeqLen, Idefics3PromptTokens? tokens = null)
    {
        var sb = new StringBuilder();
        AppendImage(sb, rows, cols, imageSeqLen, tokens ?? Idefics3PromptTokens.Default);
        return sb.ToString();
    }

    private static void AppendImage(StringBuilder sb, int rows, int cols, int imageSeqLen, Idefics3PromptTokens t)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(cols);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(imageSeqLen);
        // HF only takes the single-image form when both are 0; a grid like (0, 3) yields just the global part.
        if (rows > 0 || cols > 0)
        {
            for (int r = 1; r <= rows; r++)
            {
                for (int c = 1; c <= cols; c++)
                {
                    sb.Append(t.FakeImageToken).Append("<row_").Append(r).Append("_col_").Append(c).Append('>');
                    AppendRepeated(sb, t.ImageToken, imageSeqLen);
                }
                sb.Append('\n');
            }
            sb.Append('\n');
        }
        sb.Append(t.FakeImageToken).Append(t.GlobalImageToken);
        AppendRepeated(sb, t.ImageToken, imageSeqLen);
        sb.Append(t.FakeImageToken);
    }

    private static void AppendRepeated(StringBuilder sb, string token, int count)
    {
        for (int i = 0; i < count; i++) sb.Append(token);
    }

    /// <summary>
    /// image_seq_len as HF documents it: <c>int(((image_size // patch_size) ** 2) / (scale_factor ** 2))</c>
    /// (vision tower image size and patch size, connector pixel-shuffle scale factor).
    /// </summary>
    public static int ImageSeqLen(int imageSize, int patchSize, int scaleFactor)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(imageSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(patchSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(scaleFactor);
        long side = imageSize / patchSize;
        return (int)((double)(side * side) / ((double)scaleFactor * scaleFactor));
    }

    /// <summary>"image_seq_len" from a processor_config.json, or HF's default 169 when the field is absent.</summary>
    public static int ImageSeqLenFromProcessorConfig(string path)
    {
        using var doc = ProcessorConfigFile.Load(path);
        return ProcessorConfigFile.GetPositiveInt(doc.RootElement, path, "image_seq_len") ?? DefaultImageSeqLen;
    }
}

/// <summary>Minimal, validating reader for processor_config.json (the processor's own settings, not the image processor's).</summary>
internal static class ProcessorConfigFile
{
    public static JsonDocument Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
            throw new FastMMException($"Processor config '{path}': file not found.");
        try
        {
            var doc = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                doc.Dispose();
                throw new FastMMException($"Processor config '{path}': expected a JSON object at the top level.");
            }
            return doc;
        }
        catch (JsonException e)
        {
            throw new FastMMException($"Processor config '{path}': invalid JSON ({e.Message}).", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FastMMException($"Processor config '{path}': cannot be read ({e.Message}).", e);
        }
    }

    public static int? GetPositiveInt(JsonElement root, string source, string field)
    {
        if (!root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n) || n <= 0)
            throw new FastMMException($"Processor config '{source}': field '{field}' must be a positive integer, got {v.GetRawText()}.");
        return n;
    }

    public static int? GetNonNegativeInt(JsonElement root, string source, string field)
    {
        if (!root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n) || n < 0)
            throw new FastMMException($"Processor config '{source}': field '{field}' must be a non-negative integer, got {v.GetRawText()}.");
        return n;
    }

    public static string? GetString(JsonElement root, string source, string field)
    {
        if (!root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.String)
            throw new FastMMException($"Processor config '{source}': field '{field}' must be a string, got {v.GetRawText()}.");
        return v.GetString();
    }
}
