using FastMM.Backends;
using FastMM.Models;
using FastMM.Models.IO;
using FastMM.Tests.Support;

namespace FastMM.Tests.Models;

/// <summary>
/// CLIP and SigLIP forward passes against goldens from the independent PyTorch reference (tools/reference):
/// F32, F16 (sharded) and BF16 weights; relative L2 ≤ 1e-4 on embeddings and logits.
/// </summary>
public class GoldenTests
{
    private const double Tolerance = 1e-4;

    [Theory]
    [InlineData("tiny-clip", "tiny-clip")]
    [InlineData("tiny-clip-f16", "tiny-clip-f16")]
    [InlineData("tiny-siglip", "tiny-siglip")]
    [InlineData("tiny-siglip", "tiny-siglip.masked")]
    [InlineData("tiny-siglip-bf16", "tiny-siglip-bf16")]
    [InlineData("tiny-siglip-bf16", "tiny-siglip-bf16.masked")]
    public void ForwardMatchesPyTorchReference(string model, string golden)
    {
        var g = Npz.Read(TestPaths.Golden(golden));
        using var backend = new CpuBackend();
        using var m = ModelLoader.LoadDualEncoder(TestPaths.Model(model), backend);
        var px = g["pixel_values"];
        var text = TextInput.FromNpy(g["input_ids"], g.GetValueOrDefault("attention_mask"), golden);
        var o = m.Forward(px.Floats(golden), px.Shape[0], text);

        Compare.Close($"{golden} image_embeds", o.ImageEmbeds, g["image_embeds"].Floats(golden), Tolerance);
        Compare.Close($"{golden} text_embeds", o.TextEmbeds, g["text_embeds"].Floats(golden), Tolerance);
        Compare.Close($"{golden} logits_per_image", o.LogitsPerImage, g["logits_per_image"].Floats(golden), Tolerance);
        Compare.Close($"{golden} logits_per_text", o.LogitsPerText(), g["logits_per_text"].Floats(golden), Tolerance);
    }

    [Theory]
    [InlineData("tiny-clip")]
    [InlineData("tiny-siglip")]
    public void VisionLastHiddenStateMatches(string model)
    {
        var g = Npz.Read(TestPaths.Golden(model));
        using var backend = new CpuBackend();
        using var m = ModelLoader.LoadDualEncoder(TestPaths.Model(model), backend);
        var px = g["pixel_values"];
        using var pixels = backend.FromHost(px.Floats(model), px.Shape);
        using var h = m switch
        {
            ClipModel c => c.Vision.Transformer.HiddenStates(backend, pixels),
            SiglipModel s => s.Vision.LastHiddenState(backend, pixels),
            _ => throw new InvalidOperationException(),
        };
        Compare.Close($"{model} vision_last_hidden_state", h.ToArray(), g["vision_last_hidden_state"].Floats(model), Tolerance);
    }
}
