using System.Text.Json.Nodes;
using FastMM.Quant;

namespace FastMM.Models.IO;

/// <summary>
/// Ahead-of-time quantization (`fastmm quantize`): reads an HF folder and writes a copy whose Linear weights are
/// stored as the policy says (block formats in FastMM's quantized-tensor layout, see <see cref="QuantizedTensors"/>;
/// f16/bf16/f32 as ordinary tensors). Everything else (embeddings, norms, position tables, the patch embedding,
/// buffers, tokenizer and config files) is copied unchanged; config.json gains a "quantization_config" entry.
/// </summary>
public static class ModelQuantizer
{
    public sealed record Result(long BytesBefore, long BytesAfter, Dictionary<string, (int Tensors, long Bytes)> PerFormat, List<string> KeptAsStored);

    public static Result Quantize(string dir, string outDir, QuantPolicy policy, Action<int, int>? progress = null)
    {
        if (policy.IsNone) throw new FastMMException("quantize: give a scheme (--scheme, or --quant-vision/--quant-projector/--quant-text)");
        if (Path.GetFullPath(dir).TrimEnd('/') == Path.GetFullPath(outDir).TrimEnd('/')) throw new FastMMException($"quantize: --out must differ from the model folder ({dir})");
        using var folder = ModelFolder.Open(dir);
        if (folder.Quantized.Count > 0) throw new FastMMException($"{dir}: already quantized ({folder.Quantized.Count} quantized tensors); quantize from the original folder");

        var entries = new List<SafetensorsWriter.RawEntry>();
        var quantized = new Dictionary<string, QuantizedTensors.Entry>(StringComparer.Ordinal);
        var perFormat = new Dictionary<string, (int, long)>(StringComparer.Ordinal);
        var kept = new List<string>();
        long before = 0, after = 0;
        foreach (var name in folder.TensorNames.Order(StringComparer.Ordinal))
        {
            var t = folder.Get(name);
            before += t.ByteLength;
            var target = IsLinearWeight(t) ? policy.ForTensor(name) : null;
            SafetensorsWriter.RawEntry e;
            string key;
            if (target is { } q && QuantFormats.Get(q) is var f && f.BlockElements > 1)
            {
                int rows = t.Shape[0], cols = t.Shape[1];
                if (cols % f.BlockElements != 0)
                {
                    kept.Add($"{name} (in_features {cols} is not a multiple of {f.BlockElements})");
                    e = Copy(t);
                    key = t.StoredTypeName.ToLowerInvariant();
                }
                else
                {
                    var tensor = t; // the lambda runs while the folder is open (inside WriteRaw below)
                    e = new SafetensorsWriter.RawEntry(name, "U8", [rows, checked((int)f.RowBytes(cols))], rows * f.RowBytes(cols),
                        () => QuantizedMatrix.Quantize(tensor.ToFloatArray(), rows, cols, q, name).Bytes.ToArray());
                    quantized[name] = new QuantizedTensors.Entry(q, rows, cols);
                    key = f.Name;
                }
            }
            else if (target is { } plain)
            {
                var dtype = plain switch { QuantType.F16 => DType.F16, QuantType.BF16 => DType.BF16, _ => DType.F32 };
                var tensor = t;
                e = new SafetensorsWriter.RawEntry(name, dtype.ToString(), t.Shape, t.ElementCount * DTypeInfo.SizeOf(dtype),
                    () => SafetensorsWriter.FloatsAs(tensor.ToFloatArray(), dtype));
                key = dtype.ToString().ToLowerInvariant();
            }
            else
            {
                e = Copy(t);
                key = t.StoredTypeName.ToLowerInvariant();
            }
            entries.Add(e);
            after += e.ByteLength;
            var (n, b) = perFormat.GetValueOrDefault(key);
            perFormat[key] = (n + 1, b + e.ByteLength);
        }

        Directory.CreateDirectory(outDir);
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        if (quantized.Count > 0) metadata[QuantizedTensors.MetadataKey] = QuantizedTensors.Describe(quantized);
        SafetensorsWriter.WriteRaw(Path.Combine(outDir, "model.safetensors"), entries, metadata, progress);
        foreach (var file in Directory.GetFiles(dir))
        {
            string fileName = Path.GetFileName(file);
            if (fileName.EndsWith(".safetensors", StringComparison.Ordinal) || fileName == "model.safetensors.index.json" || fileName == "config.json") continue;
            File.Copy(file, Path.Combine(outDir, fileName), overwrite: true);
        }
        WriteConfig(Path.Combine(dir, "config.json"), Path.Combine(outDir, "config.json"), policy);
        return new Result(before, after, perFormat, kept);
    }

    /// <summary>2-D "*.weight" tensors other than embedding tables are Linear weights [out, in].</summary>
    private static bool IsLinearWeight(in TensorData t)
        => t.Shape.Length == 2 && t.Name.EndsWith(".weight", StringComparison.Ordinal)
           && !t.Name.Contains("embed", StringComparison.Ordinal) && t.DType is DType.F32 or DType.F16 or DType.BF16;

    private static SafetensorsWriter.RawEntry Copy(TensorData t)
    {
        var tensor = t;
        return new SafetensorsWriter.RawEntry(t.Name, t.StoredTypeName, t.Shape, t.ByteLength, () => tensor.Bytes.ToArray());
    }

    private static void WriteConfig(string src, string dst, QuantPolicy policy)
    {
        var root = JsonNode.Parse(File.ReadAllText(src))!.AsObject();
        static JsonNode? N(QuantType? t) => t is { } q ? JsonValue.Create(QuantFormats.Get(q).Name) : null;
        root["quantization_config"] = new JsonObject
        {
            ["quant_method"] = "fastmm",
            ["format_version"] = 1,
            ["vision"] = N(policy.Vision),
            ["projector"] = N(policy.Projector),
            ["text"] = N(policy.Text),
        };
        File.WriteAllText(dst, root.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
    }
}
