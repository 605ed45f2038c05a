using System.Text.Json;
using FastMM.Backends;
using FastMM.Cli.Commands;
using FastMM.Models;
using FastMM.Models.IO;
using FastMM.Quant;
using FastMM.Runtime.Generation;
using FastMM.Tests.Cli;
using FastMM.Tests.Support;

namespace FastMM.Tests.Quant;

/// <summary>
/// Quantized models end to end: the load-time policy, `fastmm quantize` folders (which must load to exactly the
/// load-time result), accuracy of quantized logits against the F32 goldens, bad quantized files, and quant-bench.
/// </summary>
[Collection("cli")]
public class QuantizedModelTests
{
    [Fact]
    public void PolicyParsesSchemesAndComponentOverrides()
    {
        var p = QuantPolicy.Parse("q4_0", vision: "f16");
        Assert.Equal(new QuantPolicy(QuantType.F16, QuantType.Q4_0, QuantType.Q4_0), p);
        Assert.True(QuantPolicy.Parse(null).IsNone);
        Assert.Equal(new QuantPolicy(null, null, QuantType.Int4G64), QuantPolicy.Parse(null, text: "INT4-G64"));
        var e = Assert.Throws<FastMMException>(() => QuantPolicy.Parse("q3_k"));
        Assert.Contains("q3_k", e.Message);
        Assert.Contains("q4_0", e.Message); // lists the valid names
    }

    [Theory]
    [InlineData("vision_model.encoder.layers.0.mlp.fc1.weight", ModelComponent.Vision)]
    [InlineData("vision_tower.vision_model.encoder.layers.1.self_attn.q_proj.weight", ModelComponent.Vision)]
    [InlineData("model.vision_model.encoder.layers.0.mlp.fc2.weight", ModelComponent.Vision)]
    [InlineData("multi_modal_projector.linear_1.weight", ModelComponent.Projector)]
    [InlineData("model.connector.modality_projection.proj.weight", ModelComponent.Projector)]
    [InlineData("visual_projection.weight", ModelComponent.Projector)]
    [InlineData("text_projection.weight", ModelComponent.Projector)]
    [InlineData("language_model.model.layers.0.mlp.down_proj.weight", ModelComponent.Text)]
    [InlineData("language_model.lm_head.weight", ModelComponent.Text)]
    [InlineData("model.text_model.layers.0.self_attn.o_proj.weight", ModelComponent.Text)]
    [InlineData("text_model.encoder.layers.0.mlp.fc1.weight", ModelComponent.Text)]
    public void ComponentsFollowHfNames(string name, ModelComponent expected) => Assert.Equal(expected, QuantPolicy.ComponentOf(name));

    /// <summary>
    /// Quantized tiny LLaVA/Idefics3 logits against the F32 PyTorch goldens, every Linear quantized (vision, projector,
    /// text). Measured: q8_0 relative L2 0.033 and mean KL(F32‖quantized) 5e-4 (tiny-llava) / 7e-3 nats (tiny-llava-qwen);
    /// 4-bit relative L2 0.32–0.37 and KL 0.05–0.07 nats. These random-weight models (Gaussian weights, no outliers,
    /// errors compounding through every layer) are a worst case for 4 bits; the bounds are the measurements with
    /// ~1.7x margin, so a broken kernel or layout (errors of order 1) fails while the formats' own error passes.
    /// </summary>
    [Theory]
    [InlineData("tiny-llava", "q8_0", 0.06, 1e-3)]
    [InlineData("tiny-llava", "q4_0", 0.55, 0.09)]
    [InlineData("tiny-llava", "int4-g32", 0.55, 0.09)]
    [InlineData("tiny-llava-qwen", "q8_0", 0.06, 1.2e-2)]
    [InlineData("tiny-idefics3", "q4_0", 0.6, 0.12)]
    public void QuantizedLogitsStayCloseToTheF32Golden(string model, string scheme, double maxRelL2, double maxKl)
    {
        var g = Npz.Read(TestPaths.Golden(model));
        using var backend = new CpuBackend();
        using var m = ModelLoader.LoadVisionLanguageModel(TestPaths.Model(model), backend, quant: QuantPolicy.Parse(scheme));
        Assert.True(m.Quantization.PerFormat.ContainsKey(scheme), string.Join(", ", m.Quantization.PerFormat.Keys));
        var text = TextInput.FromNpy(g["input_ids"], g.GetValueOrDefault("attention_mask"), model);
        using var f = VlmTensors.ImageFeatures(m, g["pixel_values"], g.GetValueOrDefault("pixel_attention_mask"), model);
        var logits = VlmTensors.Logits(m, text, f, model);
        var golden = g["logits"].Floats(model);
        double rel = Compare.RelativeL2(logits, golden);
        int v = m.Text.Vocab;
        double kl = 0;
        int rows = 0;
        for (int r = 0; r < golden.Length / v; r++)
        {
            if (golden.AsSpan(r * v, v).IndexOfAnyExcept(0f) < 0) continue; // padding rows are all zero on both sides
            kl += QuantBench.KlDivergence(golden.AsSpan(r * v, v), logits.AsSpan(r * v, v));
            rows++;
        }
        kl /= rows;
        Assert.True(rel > 0, "quantization changed nothing: the policy was not applied");
        Assert.True(rel <= maxRelL2 && kl <= maxKl, $"{model} {scheme}: logits relative L2 {rel:E2} (≤ {maxRelL2}), mean KL {kl:E2} (≤ {maxKl})");
    }

    [Fact]
    public void AheadOfTimeFolderLoadsToExactlyTheLoadTimeResult()
    {
        using var tmp = new TestPaths.TempDir();
        string src = TestPaths.Model("tiny-llava"), dst = tmp["q"];
        var policy = QuantPolicy.Parse("q4_0", vision: "f16");
        var r = ModelQuantizer.Quantize(src, dst, policy);
        Assert.True(r.BytesAfter < r.BytesBefore / 2, $"{r.BytesBefore} -> {r.BytesAfter}"); // embeddings stay F32
        Assert.True(r.PerFormat.ContainsKey("q4_0") && r.PerFormat.ContainsKey("f16"));
        using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dst, "config.json"))))
            Assert.Equal("q4_0", doc.RootElement.GetProperty("quantization_config").GetProperty("text").GetString());
        Assert.True(File.Exists(Path.Combine(dst, "tokenizer.json")));

        var g = Npz.Read(TestPaths.Golden("tiny-llava"));
        var text = TextInput.FromNpy(g["input_ids"], g.GetValueOrDefault("attention_mask"), "g");
        float[] Logits(string dir, QuantPolicy? quant)
        {
            using var backend = new CpuBackend();
            using var m = ModelLoader.LoadVisionLanguageModel(dir, backend, quant: quant);
            using var f = VlmTensors.ImageFeatures(m, g["pixel_values"], null, "g");
            return VlmTensors.Logits(m, text, f, "g");
        }
        Assert.Equal(Logits(src, policy), Logits(dst, null));
        // The same scheme again is fine; another one names the tensor and says what to do.
        Assert.Equal(Logits(dst, QuantPolicy.Parse(null, text: "q4_0")), Logits(dst, null));
        var e = Assert.Throws<FastMMException>(() => Logits(dst, QuantPolicy.Parse("q8_0")));
        Assert.Contains("stored as q4_0", e.Message);
        e = Assert.Throws<FastMMException>(() => ModelQuantizer.Quantize(dst, tmp["again"], policy));
        Assert.Contains("already quantized", e.Message);
    }

    [Fact]
    public void QuantizeCommandThenAskFromTheQuantizedFolder()
    {
        using var tmp = new TestPaths.TempDir();
        var (code, output, err) = CliTests.Run("quantize", "--model", TestPaths.Model("tiny-llava-qwen"), "--out", tmp["q8"], "--scheme", "q8_0");
        Assert.True(code == 0, err);
        Assert.Contains("q8_0", output);
        (code, output, err) = CliTests.Run("ask", "--model", tmp["q8"], "--image", Path.Combine(TestPaths.Data, "images", "gray_37x23.png"), "--max-new-tokens", "4", "Hi?");
        Assert.True(code == 0, err);
    }

    [Theory]
    [InlineData("not json", "not valid JSON")]
    [InlineData("{\"language_model.lm_head.weight\": {\"format\": \"q4_0\", \"shape\": [1008, 64]}}", "must be stored as U8")]
    [InlineData("{\"nope.weight\": {\"format\": \"q4_0\", \"shape\": [4, 32]}}", "does not hold")]
    [InlineData("{\"language_model.lm_head.weight\": {\"format\": \"q5_k\", \"shape\": [1008, 64]}}", "unknown quantization scheme")]
    [InlineData("{\"language_model.lm_head.weight\": {\"format\": \"q4_0\"}}", "must be {\"format\"")]
    public void HostileQuantMetadataIsOneClearError(string metadata, string expected)
    {
        using var tmp = new TestPaths.TempDir();
        string dir = tmp["m"];
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(TestPaths.Model("tiny-llava"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        // Rewrite the weights with the hostile metadata entry (tensors unchanged).
        string path = Path.Combine(dir, "model.safetensors");
        var entries = new List<SafetensorsWriter.RawEntry>();
        using (var file = SafetensorsFile.Open(Path.Combine(TestPaths.Model("tiny-llava"), "model.safetensors")))
            foreach (var n in file.Names)
            {
                file.TryGet(n, out var t);
                var bytes = t.Bytes.ToArray();
                entries.Add(new SafetensorsWriter.RawEntry(n, t.StoredTypeName, t.Shape, bytes.Length, () => bytes));
            }
        SafetensorsWriter.WriteRaw(path, entries, new Dictionary<string, string> { [QuantizedTensors.MetadataKey] = metadata });
        using var backend = new CpuBackend();
        var e = Assert.Throws<FastMMException>(() => ModelLoader.LoadVisionLanguageModel(dir, backend));
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void QuantBenchWritesOneRecordPerSchemeWithTheDocumentedKeys()
    {
        using var tmp = new TestPaths.TempDir();
        var (code, output, err) = CliTests.Run("quant-bench", "--model", TestPaths.Model("tiny-llava"), "--schemes", "q8_0,vision:f16+text:q4_0",
            "--prompts", "2", "--runs", "1", "--prompt-tokens", "16", "--decode-tokens", "4", "--out", tmp["r.json"], "--plot", tmp["p.png"]);
        Assert.True(code == 0, err);
        Assert.Contains("vision:f16+text:q4_0", output);
        using var doc = JsonDocument.Parse(File.ReadAllText(tmp["r.json"]));
        var rows = doc.RootElement.EnumerateArray().ToList();
        Assert.Equal(["reference", "q8_0", "vision:f16+text:q4_0"], rows.Select(r => r.GetProperty("scheme").GetString()));
        string[] keys = ["scheme", "weight_bytes", "load_ms", "image_encode_ms", "prefill_tok_s", "decode_tok_s", "peak_mem_bytes",
                         "kl_vs_ref", "top1_agreement", "vision_cosine", "task_accuracy", "recall_at_1"];
        foreach (var r in rows)
        {
            Assert.Equal(keys, r.EnumerateObject().Select(p => p.Name));
            Assert.True(r.GetProperty("decode_tok_s").GetDouble() > 0 && r.GetProperty("peak_mem_bytes").GetInt64() > 0);
            Assert.Equal(JsonValueKind.Null, r.GetProperty("task_accuracy").ValueKind); // no --data
        }
        Assert.True(rows[2].GetProperty("weight_bytes").GetInt64() < rows[1].GetProperty("weight_bytes").GetInt64());
        Assert.True(rows[1].GetProperty("kl_vs_ref").GetDouble() > 0);
        Assert.True(rows[1].GetProperty("vision_cosine").GetDouble() > 0.99);
        using var png = SkiaSharp.SKBitmap.Decode(tmp["p.png"]);
        Assert.True(png.Width >= 1000 && png.Height >= 400);
    }

    [Fact]
    public void QuantBenchOnADualEncoderReportsRecall()
    {
        using var tmp = new TestPaths.TempDir();
        var (code, _, err) = CliTests.Run("quant-bench", "--model", TestPaths.Model("tiny-clip"), "--schemes", "q8_0",
            "--data", Path.Combine(TestPaths.Data, "shapes-eval"), "--prompts", "3", "--runs", "1", "--out", tmp["r.json"]);
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(File.ReadAllText(tmp["r.json"]));
        var q = doc.RootElement[1];
        Assert.InRange(q.GetProperty("recall_at_1").GetDouble(), 0, 1);
        Assert.Equal(JsonValueKind.Null, q.GetProperty("decode_tok_s").ValueKind);
    }
}
