using FastMM.Quant;

namespace FastMM.Models;

/// <summary>The three parts of a VLM that a quantization policy can treat differently.</summary>
public enum ModelComponent { Vision, Projector, Text }

/// <summary>
/// Which storage format each component's Linear weights get at load (null: as stored, computed in F32).
/// Embeddings, norms, position tables, the vision patch embedding and a head tied to the embeddings are never
/// quantized: they are small or lookup tables, and the patch embedding sees raw pixels.
/// </summary>
public sealed record QuantPolicy(QuantType? Vision = null, QuantType? Projector = null, QuantType? Text = null)
{
    public static readonly QuantPolicy None = new();

    public bool IsNone => Vision is null && Projector is null && Text is null;

    /// <summary>`all` applies to every component; a component's own scheme overrides it. Null or empty = unchanged.</summary>
    public static QuantPolicy Parse(string? all, string? vision = null, string? projector = null, string? text = null)
    {
        QuantType? Pick(string? own) => !string.IsNullOrEmpty(own) ? QuantFormats.Parse(own).Type
            : !string.IsNullOrEmpty(all) ? QuantFormats.Parse(all).Type : null;
        return new QuantPolicy(Pick(vision), Pick(projector), Pick(text));
    }

    /// <summary>
    /// The policy a `fastmm quantize` folder records in config.json ("quantization_config", quant_method "fastmm"),
    /// applied when the caller gives none: it covers matrices not stored quantized, such as a head tied to the embeddings.
    /// </summary>
    public static QuantPolicy? FromConfig(IO.HfConfig config)
    {
        if (!config.Has("quantization_config")) return null;
        var q = config.Section("quantization_config");
        if (q.String("quant_method", "") != "fastmm") return null;
        return Parse(null, q.Has("vision") ? q.String("vision") : null, q.Has("projector") ? q.String("projector") : null,
            q.Has("text") ? q.String("text") : null);
    }

    public QuantType? For(ModelComponent c) => c switch
    {
        ModelComponent.Vision => Vision,
        ModelComponent.Projector => Projector,
        _ => Text,
    };

    public QuantType? ForTensor(string name) => For(ComponentOf(name));

    /// <summary>
    /// The component of an HF tensor name, across the families FastMM loads: CLIP/SigLIP (vision_model.*,
    /// text_model.*, visual_projection, text_projection), LLaVA (vision_tower.*, multi_modal_projector.*,
    /// language_model.*, lm_head, in both layouts) and Idefics3 (model.vision_model.*, model.connector.*, model.text_model.*).
    /// </summary>
    public static ModelComponent ComponentOf(string name)
    {
        if (name.Contains("vision_tower.", StringComparison.Ordinal) || name.Contains("vision_model.", StringComparison.Ordinal))
            return ModelComponent.Vision;
        if (name.Contains("multi_modal_projector.", StringComparison.Ordinal) || name.Contains("connector.", StringComparison.Ordinal)
            || name.StartsWith("visual_projection", StringComparison.Ordinal) || name.StartsWith("text_projection", StringComparison.Ordinal))
            return ModelComponent.Projector;
        return ModelComponent.Text;
    }

    public override string ToString()
    {
        static string N(QuantType? t) => t is { } q ? QuantFormats.Get(q).Name : "as stored";
        return $"vision {N(Vision)}, projector {N(Projector)}, text {N(Text)}";
    }
}
