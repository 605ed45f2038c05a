using FastMM.Models.IO;
using FastMM.Models.Blocks;

namespace FastMM.Models;

/// <summary>Image and text embeddings (L2-normalised) and the model's logits, row-major.</summary>
public sealed record DualEncoderOutput(int Images, int Texts, int Dim, float[] ImageEmbeds, float[] TextEmbeds, float[] LogitsPerImage)
{
    /// <summary>logits_per_text = logits_per_image transposed.</summary>
    public float[] LogitsPerText()
    {
        var t = new float[LogitsPerImage.Length];
        for (int i = 0; i < Images; i++)
            for (int j = 0; j < Texts; j++) t[j * Images + i] = LogitsPerImage[i * Texts + j];
        return t;
    }
}

/// <summary>Token ids and attention mask for a batch of texts, row-major [Batch, Length].</summary>
public sealed record TextInput(int Batch, int Length, int[] Ids, int[]? AttentionMask)
{
    public static TextInput FromNpy(NpyArray ids, NpyArray? mask, string source)
    {
        ids.ExpectShape(source, -1, -1);
        var raw = ids.Ints(source);
        var idArr = new int[raw.Length];
        for (int i = 0; i < raw.Length; i++)
        {
            if (raw[i] < 0 || raw[i] > int.MaxValue) throw new FastMMException($"{source}: input_ids[{i / ids.Shape[1]}, {i % ids.Shape[1]}] = {raw[i]} is not a valid token id");
            idArr[i] = (int)raw[i];
        }
        int[]? m = null;
        if (mask is not null)
        {
            mask.ExpectShape(source, ids.Shape[0], ids.Shape[1]);
            m = mask.Ints(source).Select(v => v != 0 ? 1 : 0).ToArray();
        }
        return new TextInput(ids.Shape[0], ids.Shape[1], idArr, m);
    }
}

/// <summary>
/// A CLIP-style dual encoder (CLIP, SigLIP): image and text towers projected into one space,
/// logits = exp(logit_scale) · cos + logit_bias.
/// </summary>
public abstract class DualEncoderModel : IDisposable
{
    protected readonly Weights W;

    /// <summary>What the load made of the Linear weights (formats, bytes).</summary>
    public QuantReport Quantization => W.Report;
    public IBackend Backend => W.Backend;
    public abstract string ModelType { get; }
    public abstract int EmbedDim { get; }
    public abstract int ImageSize { get; }
    /// <summary>The text length the model was trained with (CLIP 77, SigLIP 64).</summary>
    public abstract int TextLength { get; }
    /// <summary>exp(logit_scale).</summary>
    public float LogitScale { get; protected init; }
    public float LogitBias { get; protected init; }

    protected DualEncoderModel(Weights w) { W = w; }

    /// <summary>Projected, unnormalised image features [B, E] for pixel_values [B, 3, S, S].</summary>
    public abstract Tensor ImageFeatures(Tensor pixels);
    /// <summary>Projected, unnormalised text features [B, E].</summary>
    public abstract Tensor TextFeatures(TextInput text);

    /// <summary>Normalised image embeddings [B, E] from host pixel_values.</summary>
    public float[] EmbedImages(ReadOnlySpan<float> pixels, int batch)
    {
        using var px = Backend.FromHost(pixels, batch, 3, ImageSize, ImageSize);
        using var f = ImageFeatures(px);
        Backend.L2NormalizeInPlace(f);
        return f.ToArray();
    }

    public float[] EmbedTexts(TextInput text)
    {
        using var f = TextFeatures(text);
        Backend.L2NormalizeInPlace(f);
        return f.ToArray();
    }

    /// <summary>logits_per_image [I, T] from normalised embeddings.</summary>
    public float[] Logits(ReadOnlySpan<float> imageEmbeds, int images, ReadOnlySpan<float> textEmbeds, int texts)
    {
        using var a = Backend.FromHost(imageEmbeds, images, EmbedDim);
        using var t = Backend.FromHost(textEmbeds, texts, EmbedDim);
        using var l = Backend.MatMulTransposed(a, t);
        Backend.ScaleInPlace(l, LogitScale, LogitBias);
        return l.ToArray();
    }

    /// <summary>The full forward pass, as HF's CLIPModel/SiglipModel forward returns it.</summary>
    public DualEncoderOutput Forward(ReadOnlySpan<float> pixels, int images, TextInput text)
    {
        var ie = EmbedImages(pixels, images);
        var te = EmbedTexts(text);
        return new DualEncoderOutput(images, text.Batch, EmbedDim, ie, te, Logits(ie, images, te, text.Batch));
    }

    public virtual void Dispose()
    {
        W.Dispose();
        GC.SuppressFinalize(this);
    }
}
