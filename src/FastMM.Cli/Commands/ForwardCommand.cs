using System.CommandLine;
using FastMM.Models;
using FastMM.Models.IO;

namespace FastMM.Cli.Commands;

/// <summary>
/// `fastmm forward`: the raw forward pass on tensors from an .npz, keyed by HF's forward argument names,
/// writing HF's output names. This is how outside references check FastMM, so it does nothing but the model.
/// </summary>
internal static class ForwardCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = CommonOptions.Model();
        var inputs = new Option<FileInfo>("--inputs") { Description = "input .npz with input_ids, attention_mask (optional), pixel_values", Required = true };
        var output = new Option<FileInfo>("--out") { Description = "output .npz (image_embeds, text_embeds, logits_per_image, logits_per_text)", Required = true };
        var cmd = new Command("forward", "Run the raw forward pass on tensors from an .npz (HF argument and output names). " +
            "CLIP/SigLIP: input_ids, attention_mask, pixel_values → image_embeds, text_embeds, logits_per_image, logits_per_text. " +
            "LLaVA/Idefics3: input_ids, attention_mask, pixel_values, pixel_attention_mask, position_ids → logits [B, T, vocab]") { model, inputs, output };
        cmd.SetHandler(stderr, p =>
        {
            string dir = p.GetValue(model)!;
            string inPath = p.GetValue(inputs)!.FullName, outPath = p.GetValue(output)!.FullName;
            using var backend = CommonOptions.CreateBackend(p);
            var arrays = Npz.Read(inPath);
            string src = Path.GetFileName(inPath);
            if (ModelLoader.IsGenerative(ModelLoader.ReadModelType(dir))) return RunGenerative(dir, backend, arrays, src, outPath, stderr, CommonOptions.Policy(p));
            string[] known = ["input_ids", "attention_mask", "pixel_values"];
            foreach (var k in arrays.Keys)
                if (!known.Contains(k)) throw new FastMMException($"{src}: unexpected array '{k}' (expected {string.Join(", ", known)})");
            if (!arrays.TryGetValue("input_ids", out var ids)) throw new FastMMException($"{src}: missing 'input_ids'");
            if (!arrays.TryGetValue("pixel_values", out var px)) throw new FastMMException($"{src}: missing 'pixel_values'");
            arrays.TryGetValue("attention_mask", out var mask);
            var text = TextInput.FromNpy(ids, mask, src);

            using var m = new ProgressBar(stderr).Run("loading weights", prog => ModelLoader.LoadDualEncoder(dir, backend, prog, CommonOptions.Policy(p)));
            px.ExpectShape(src, -1, 3, m.ImageSize, m.ImageSize);
            var o = m.Forward(px.Floats(src), px.Shape[0], text);
            Npz.Write(outPath,
            [
                NpyArray.Float32("image_embeds", o.ImageEmbeds, o.Images, o.Dim),
                NpyArray.Float32("text_embeds", o.TextEmbeds, o.Texts, o.Dim),
                NpyArray.Float32("logits_per_image", o.LogitsPerImage, o.Images, o.Texts),
                NpyArray.Float32("logits_per_text", o.LogitsPerText(), o.Texts, o.Images),
            ]);
            stderr.WriteLine($"wrote {outPath}");
            return 0;
        });
        return cmd;
    }

    /// <summary>The inputs a generative VLM's HF processor produces; unknown keys are an error (a typo would otherwise be ignored).</summary>
    internal static (TextInput Text, NpyArray? Pixels, NpyArray? PixelMask, NpyArray? PositionIds) VlmInputs(Dictionary<string, NpyArray> arrays, string src)
    {
        string[] known = ["input_ids", "attention_mask", "pixel_values", "pixel_attention_mask", "position_ids"];
        foreach (var k in arrays.Keys)
            if (!known.Contains(k)) throw new FastMMException($"{src}: unexpected array '{k}' (expected {string.Join(", ", known)})");
        if (!arrays.TryGetValue("input_ids", out var ids)) throw new FastMMException($"{src}: missing 'input_ids'");
        var text = TextInput.FromNpy(ids, arrays.GetValueOrDefault("attention_mask"), src);
        return (text, arrays.GetValueOrDefault("pixel_values"), arrays.GetValueOrDefault("pixel_attention_mask"), arrays.GetValueOrDefault("position_ids"));
    }

    private static int RunGenerative(string dir, IBackend backend, Dictionary<string, NpyArray> arrays, string src, string outPath, TextWriter stderr, QuantPolicy quant)
    {
        var (text, pixels, mask, positions) = VlmInputs(arrays, src);
        var offsets = FastMM.Runtime.Generation.VlmTensors.RopeOffsets(text, positions, src);
        using var m = new ProgressBar(stderr).Run("loading weights", prog => ModelLoader.LoadVisionLanguageModel(dir, backend, prog, quant));
        if (text.Length > m.Text.Spec.MaxPositions)
            throw new FastMMException($"{src}: {text.Length} tokens exceed the context window of {m.Text.Spec.MaxPositions}");
        using var features = FastMM.Runtime.Generation.VlmTensors.ImageFeatures(m, pixels, mask, src);
        var logits = FastMM.Runtime.Generation.VlmTensors.Logits(m, text, features, src, offsets);
        Npz.Write(outPath, [NpyArray.Float32("logits", logits, text.Batch, text.Length, m.Text.Vocab)]);
        stderr.WriteLine($"wrote {outPath}");
        return 0;
    }
}
