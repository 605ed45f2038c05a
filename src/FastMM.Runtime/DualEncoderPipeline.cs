using FastMM.Models;
using FastMM.Runtime.Images;
using FastMM.Runtime.Tokenizers;

namespace FastMM.Runtime;

/// <summary>
/// A CLIP/SigLIP model with the folder's own image processor and tokenizer: images and strings in,
/// normalised embeddings and logits out — what the HF processor + model pair does.
/// </summary>
public sealed class DualEncoderPipeline : IDisposable
{
    public DualEncoderModel Model { get; }
    public ImageProcessor Images { get; }
    public Tokenizer? Tokenizer { get; }
    public string ModelDirectory { get; }

    private DualEncoderPipeline(string dir, DualEncoderModel model, ImageProcessor images, Tokenizer? tokenizer)
    {
        ModelDirectory = dir; Model = model; Images = images; Tokenizer = tokenizer;
    }

    /// <param name="needText">false for image-only work (no tokenizer.json required).</param>
    public static DualEncoderPipeline Load(string dir, IBackend backend, bool needText = true, Action<int, int>? progress = null, QuantPolicy? quant = null)
    {
        ModelLoader.ReadModelType(dir); // fail on an unsupported family before reading anything else
        var images = ImageProcessor.FromConfigFile(Path.Combine(dir, "preprocessor_config.json"));
        Tokenizer? tokenizer = needText ? Tokenizer.FromFolder(dir) : null;
        var model = ModelLoader.LoadDualEncoder(dir, backend, progress, quant);
        if (images.Preprocess(new RgbImage(1, 1, new byte[3])) is var probe && (probe.Height != model.ImageSize || probe.Width != model.ImageSize))
        {
            model.Dispose();
            throw new FastMMException($"{dir}: preprocessor_config.json produces {probe.Height}x{probe.Width} images but the model expects {model.ImageSize}x{model.ImageSize}");
        }
        return new DualEncoderPipeline(dir, model, images, tokenizer);
    }

    /// <summary>Normalised embeddings [N, E] for decoded images.</summary>
    public float[] EmbedImages(IReadOnlyList<RgbImage> images)
    {
        var px = Images.PreprocessBatch(images);
        return Model.EmbedImages(px.Data, images.Count);
    }

    /// <summary>The model's text input as its HF processor builds it (CLIP: 77 with mask; SigLIP: 64, no mask).</summary>
    public TextInput Tokenize(IReadOnlyList<string> texts)
    {
        if (Tokenizer is null) throw new InvalidOperationException("pipeline was loaded without a tokenizer");
        if (texts.Count == 0) throw new FastMMException("no texts given");
        var batch = Tokenizer.EncodeForModel(texts, Model.TextLength, padToMax: true);
        // HF's SigLIP processor returns no attention_mask and the model was trained on padded text without one.
        return new TextInput(batch.BatchSize, batch.Length, batch.Ids, Model is ClipModel ? batch.AttentionMask : null);
    }

    public float[] EmbedTexts(IReadOnlyList<string> texts) => Model.EmbedTexts(Tokenize(texts));

    /// <summary>logits_per_image [images, texts] (zero-shot classification scores).</summary>
    public float[] Rank(IReadOnlyList<RgbImage> images, IReadOnlyList<string> texts)
    {
        var ie = EmbedImages(images);
        var te = EmbedTexts(texts);
        return Model.Logits(ie, images.Count, te, texts.Count);
    }

    /// <summary>Scores to probabilities as each family is trained: softmax over texts (CLIP), independent sigmoid (SigLIP).</summary>
    public float[] Probabilities(ReadOnlySpan<float> logitsRow)
    {
        var p = new float[logitsRow.Length];
        if (Model is SiglipModel)
        {
            for (int i = 0; i < p.Length; i++) p[i] = 1f / (1f + MathF.Exp(-logitsRow[i]));
            return p;
        }
        float max = float.NegativeInfinity;
        foreach (var v in logitsRow) max = Math.Max(max, v);
        float sum = 0;
        for (int i = 0; i < p.Length; i++) { p[i] = MathF.Exp(logitsRow[i] - max); sum += p[i]; }
        for (int i = 0; i < p.Length; i++) p[i] /= sum;
        return p;
    }

    public void Dispose() => Model.Dispose();
}
