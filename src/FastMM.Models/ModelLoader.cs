using FastMM.Models.Blocks;
using FastMM.Models.IO;

namespace FastMM.Models;

/// <summary>Opens an HF model folder and builds the family its config.json names (model_type).</summary>
public static class ModelLoader
{
    public static readonly string[] DualEncoderTypes = [ClipModel.Type, SiglipModel.Type];
    public static readonly string[] GenerativeTypes = [LlavaModel.Type, Idefics3Model.Type];
    public static readonly string[] SupportedTypes = [.. DualEncoderTypes, .. GenerativeTypes];

    public static bool IsGenerative(string modelType) => GenerativeTypes.Contains(modelType);

    /// <summary>The model_type in DIR/config.json, checked against the supported families.</summary>
    public static string ReadModelType(string dir)
    {
        if (!Directory.Exists(dir)) throw new FastMMException($"{dir}: model folder not found");
        var cfg = HfConfig.Load(Path.Combine(dir, "config.json"));
        string type = cfg.String("model_type");
        if (!SupportedTypes.Contains(type))
            throw new FastMMException($"{Path.Combine(dir, "config.json")}: model_type '{type}' is not supported (supported: {string.Join(", ", SupportedTypes)})");
        return type;
    }

    /// <summary>Loads a generative VLM (LLaVA, Idefics3/SmolVLM). progress(loaded, total) is called per tensor.</summary>
    public static VisionLanguageModel LoadVisionLanguageModel(string dir, IBackend backend, Action<int, int>? progress = null, QuantPolicy? quant = null)
    {
        string type = ReadModelType(dir);
        if (!IsGenerative(type))
            throw new FastMMException($"{dir}: model_type '{type}' is a dual encoder, not a generative model (generative: {string.Join(", ", GenerativeTypes)})");
        using var folder = ModelFolder.Open(dir);
        var w = new Weights(folder, backend, progress, quant ?? QuantPolicy.FromConfig(folder.Config));
        try
        {
            return type switch
            {
                LlavaModel.Type => new LlavaModel(w),
                _ => new Idefics3Model(w),
            };
        }
        catch
        {
            w.Dispose();
            throw;
        }
    }

    /// <summary>Loads a CLIP or SigLIP dual encoder. progress(loaded, total) is called per tensor.</summary>
    public static DualEncoderModel LoadDualEncoder(string dir, IBackend backend, Action<int, int>? progress = null, QuantPolicy? quant = null)
    {
        string type = ReadModelType(dir);
        using var folder = ModelFolder.Open(dir);
        var w = new Weights(folder, backend, progress, quant ?? QuantPolicy.FromConfig(folder.Config));
        try
        {
            // Weights are copied onto the backend while building, so the mapped files can close afterwards.
            return type switch
            {
                ClipModel.Type => new ClipModel(w),
                SiglipModel.Type => new SiglipModel(w),
                _ => throw new FastMMException($"{dir}: model_type '{type}' is a generative model, not a dual encoder (use ask/generate)"),
            };
        }
        catch
        {
            w.Dispose();
            throw;
        }
    }
}
