using System.Text.Json;
using FastMM.Quant;

namespace FastMM.Models.IO;

/// <summary>
/// FastMM's on-disk quantized weights (written by `fastmm quantize`): a quantized Linear weight "X.weight" of logical
/// shape [out, in] is stored in the safetensors file as a U8 tensor [out, rowBytes] holding the format's blocks row by
/// row (GGUF's Q8_0 / Q4_0 / Q4_1 byte layouts for q8_0 / q4_0 / int4-g32), and the file's __metadata__ maps it to its
/// format under the key "fastmm.quant": a JSON object {"X.weight": {"format": "q4_0", "shape": [out, in]}, …}.
/// Every other tensor is an ordinary F32/F16/BF16 tensor, so the file stays valid safetensors.
/// </summary>
public static class QuantizedTensors
{
    public const string MetadataKey = "fastmm.quant";

    public readonly record struct Entry(QuantType Type, int Rows, int Columns);

    /// <summary>Reads and validates one file's quantized-tensor table against the tensors it describes.</summary>
    public static Dictionary<string, Entry> Read(SafetensorsFile file)
    {
        var result = new Dictionary<string, Entry>(StringComparer.Ordinal);
        if (!file.Metadata.TryGetValue(MetadataKey, out var json)) return result;
        string where = $"{file.Path}: __metadata__[\"{MetadataKey}\"]";
        try
        {
            using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 8 });
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new FastMMException($"{where} is not a JSON object");
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                var v = p.Value;
                if (v.ValueKind != JsonValueKind.Object || !v.TryGetProperty("format", out var f) || f.ValueKind != JsonValueKind.String
                    || !v.TryGetProperty("shape", out var s) || s.ValueKind != JsonValueKind.Array || s.GetArrayLength() != 2
                    || !s[0].TryGetInt32(out int rows) || !s[1].TryGetInt32(out int cols) || rows <= 0 || cols <= 0)
                    throw new FastMMException($"{where}: entry '{p.Name}' must be {{\"format\": NAME, \"shape\": [out, in]}} with positive sizes");
                QuantFormat format;
                try { format = QuantFormats.Parse(f.GetString()!); }
                catch (FastMMException e) { throw new FastMMException($"{where}: entry '{p.Name}': {e.Message}"); }
                if (!file.TryGet(p.Name, out var t)) throw new FastMMException($"{where}: lists '{p.Name}', which the file does not hold");
                long rowBytes = format.RowBytes(cols);
                if (cols % format.BlockElements != 0 || t.StoredTypeName != "U8" || t.Shape.Length != 2 || t.Shape[0] != rows || t.Shape[1] != rowBytes)
                    throw new FastMMException($"{file.Path}: quantized tensor '{p.Name}' ({format.Name} [{rows}, {cols}]) must be stored as U8 [{rows}, {rowBytes}], found {t.StoredTypeName} {t.ShapeString}");
                result[p.Name] = new Entry(format.Type, rows, cols);
            }
        }
        catch (JsonException e)
        {
            throw new FastMMException($"{where} is not valid JSON ({e.Message})");
        }
        return result;
    }

    public static string Describe(IEnumerable<KeyValuePair<string, Entry>> entries)
        => JsonSerializer.Serialize(entries.OrderBy(e => e.Key, StringComparer.Ordinal).ToDictionary(
            e => e.Key, e => new { format = QuantFormats.Get(e.Value.Type).Name, shape = new[] { e.Value.Rows, e.Value.Columns } }));
}
