using FastMM.Backends;
using FastMM.Models;
using FastMM.Models.IO;
using FastMM.Tests.Support;

namespace FastMM.Tests.Models;

/// <summary>
/// CLIP and SigLIP forward passes against goldens from the independent PyTorch reference (tools/reference):
/// F32, F16 (sharded) and BF16 weights; relative L2 ≤ 1e-4 on embeddings and logits (≤ 2e-3 on a backend that declares
/// F16 operands for some ops, as the CUDA backend's prefill attention and tensor-core GEMMs).
/// </summary>
public class GoldenTests(BackendCache backends) : IClassFixture<BackendCache>
{
    private const double Tolerance = 1e-4;

    /// <summary>
    /// Every golden on the CPU and on every GPU backend this machine has; on ILGPU's (slow) CPU accelerator one golden per
    /// family, the masked SigLIP one for its padding path.
    /// </summary>
    public static TheoryData<string, string, string> Forwards()
    {
        var data = new TheoryData<string, string, string>();
        (string, string)[] goldens = [("tiny-clip", "tiny-clip"), ("tiny-clip-f16", "tiny-clip-f16"), ("tiny-siglip", "tiny-siglip"),
            ("tiny-siglip", "tiny-siglip.masked"), ("tiny-siglip-bf16", "tiny-siglip-bf16"), ("tiny-siglip-bf16", "tiny-siglip-bf16.masked")];
        foreach (var backend in new[] { "cpu" }.Concat(MachineBackends.Names))
            foreach (var (model, golden) in goldens)
                if (backend != "ilgpu:cpu" || golden is "tiny-clip" or "tiny-siglip.masked")
                    data.Add(model, golden, backend);
        return data;
    }

    [Theory]
    [MemberData(nameof(Forwards))]
    public void ForwardMatchesPyTorchReference(string model, string golden, string backendName)
    {
        var g = Npz.Read(TestPaths.Golden(golden));
        var backend = backends.Get(backendName);
        using var m = ModelLoader.LoadDualEncoder(TestPaths.Model(model), backend);
        var px = g["pixel_values"];
        var text = TextInput.FromNpy(g["input_ids"], g.GetValueOrDefault("attention_mask"), golden);
        var o = m.Forward(px.Floats(golden), px.Shape[0], text);
        double tol = Compare.ToleranceFor(backend, Tolerance);

        Compare.Close($"{golden} image_embeds", o.ImageEmbeds, g["image_embeds"].Floats(golden), tol);
        Compare.Close($"{golden} text_embeds", o.TextEmbeds, g["text_embeds"].Floats(golden), tol);
        Compare.Close($"{golden} logits_per_image", o.LogitsPerImage, g["logits_per_image"].Floats(golden), tol);
        Compare.Close($"{golden} logits_per_text", o.LogitsPerText(), g["logits_per_text"].Floats(golden), tol);
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
