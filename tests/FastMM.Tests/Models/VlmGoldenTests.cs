using FastMM.Backends;
using FastMM.Models;
using FastMM.Models.IO;
using FastMM.Runtime.Generation;
using FastMM.Runtime.Tokenizers;
using FastMM.Tests.Support;

namespace FastMM.Tests.Models;

/// <summary>
/// LLaVA (Llama and Qwen2 text, both checkpoint layouts, F32/F16) and Idefics3 (BF16) against the independent
/// PyTorch reference (tools/reference/make_vlm_reference.py): image features and logits at every real position
/// within relative L2 1e-4, and greedy generation token for token.
/// </summary>
public class VlmGoldenTests
{
    private const double Tolerance = 1e-4;

    public static TheoryData<string> Models => new() { "tiny-llava", "tiny-llava-f16", "tiny-llava-qwen", "tiny-idefics3" };

    private static (VisionLanguageModel Model, Dictionary<string, NpyArray> G, TextInput Text) Load(CpuBackend backend, string model, string golden)
    {
        var g = Npz.Read(TestPaths.Golden(golden));
        var m = ModelLoader.LoadVisionLanguageModel(TestPaths.Model(model), backend);
        return (m, g, TextInput.FromNpy(g["input_ids"], g.GetValueOrDefault("attention_mask"), golden));
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void ImageFeaturesAndLogitsMatch(string model)
    {
        using var backend = new CpuBackend();
        var (m, g, text) = Load(backend, model, model);
        using (m)
        {
            using var f = VlmTensors.ImageFeatures(m, g["pixel_values"], g.GetValueOrDefault("pixel_attention_mask"), model);
            Compare.Close($"{model} image_features", f!.ToArray(), g["image_features"].Floats(model), Tolerance);
            var logits = VlmTensors.Logits(m, text, f, model);
            Compare.Close($"{model} logits", logits, g["logits"].Floats(model), Tolerance);
        }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void PaddedBatchMatchesPerRow(string model)
    {
        using var backend = new CpuBackend();
        string golden = model + ".batch";
        var (m, g, text) = Load(backend, model, golden);
        using (m)
        {
            using var f = VlmTensors.ImageFeatures(m, g["pixel_values"], g.GetValueOrDefault("pixel_attention_mask"), golden);
            Compare.Close($"{golden} image_features", f!.ToArray(), g["image_features"].Floats(golden), Tolerance);
            var logits = VlmTensors.Logits(m, text, f, golden, VlmTensors.RopeOffsets(text, g["position_ids"], golden));
            // Padding positions attend to nothing and are 0 on both sides.
            Compare.Close($"{golden} logits", logits, g["logits"].Floats(golden), Tolerance);
        }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void GreedyGenerationMatchesTokenForToken(string model)
    {
        using var backend = new CpuBackend();
        var (m, g, text) = Load(backend, model, model);
        using (m)
        {
            var tok = Tokenizer.FromFolder(TestPaths.Model(model));
            using var f = VlmTensors.ImageFeatures(m, g["pixel_values"], g.GetValueOrDefault("pixel_attention_mask"), model);
            var expected = g["generated_ids"].Ints(model);
            int newTokens = g["generated_ids"].Shape[1] - text.Length;
            using var gen = new Generator(m, tok);
            var ids = VlmTensors.GenerateGreedy(gen, m, text, f, newTokens, eos: [], padId: 0, model, out int width);
            Assert.Equal(g["generated_ids"].Shape[1], width);
            Assert.Equal(expected, ids);
        }
    }
}
