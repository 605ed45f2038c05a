namespace FastMM.Runtime.Images;

// LLaVA needs no image processor of its own: llava-1.5 ships a CLIPImageProcessor config and llava-interleave a
// SiglipImageProcessor one, both handled by ImageProcessor.FromConfigFile. What LlavaProcessor adds is the text side,
// below.

/// <summary>LlavaProcessor's settings from processor_config.json.</summary>
/// <param name="PatchSize">Vision tower patch size.</param>
/// <param name="VisionFeatureSelectStrategy">"default" drops the CLS feature, "full" keeps it.</param>
/// <param name="NumAdditionalImageTokens">Extra vision-tower tokens besides the patches (1 for CLIP's CLS); HF's default is 0.</param>
/// <param name="ImageToken">The placeholder in the prompt.</param>
public sealed record LlavaPromptSettings(
    int PatchSize, string VisionFeatureSelectStrategy, int NumAdditionalImageTokens = 0, string ImageToken = "<image>")
{
    /// <summary>
    /// Reads patch_size, vision_feature_select_strategy, num_additional_image_tokens and image_token. Older configs
    /// without patch_size or the strategy did not expand prompts in HF either, so they are refused here.
    /// </summary>
    public static LlavaPromptSettings FromProcessorConfig(string path)
    {
        using var doc = ProcessorConfigFile.Load(path);
        var root = doc.RootElement;
        int patch = ProcessorConfigFile.GetPositiveInt(root, path, "patch_size")
            ?? throw new FastMMException($"Processor config '{path}': required field 'patch_size' is missing.");
        string strategy = ProcessorConfigFile.GetString(root, path, "vision_feature_select_strategy")
            ?? throw new FastMMException($"Processor config '{path}': required field 'vision_feature_select_strategy' is missing.");
        if (strategy is not ("default" or "full"))
            throw new FastMMException($"Processor config '{path}': field 'vision_feature_select_strategy' must be \"default\" or \"full\", got \"{strategy}\".");
        int additional = ProcessorConfigFile.GetNonNegativeInt(root, path, "num_additional_image_tokens") ?? 0;
        string token = ProcessorConfigFile.GetString(root, path, "image_token") ?? "<image>";
        if (token.Length == 0)
            throw new FastMMException($"Processor config '{path}': field 'image_token' must not be empty.");
        return new LlavaPromptSettings(patch, strategy, additional, token);
    }
}

/// <summary>HF LlavaProcessor's prompt expansion (processing_llava.py): every image token repeated once per image feature.</summary>
public static class LlavaPromptLayout
{
    /// <summary>
    /// HF: <c>(height // patch) * (width // patch) + num_additional_image_tokens</c>, minus one for the "default"
    /// strategy (which drops CLS). <paramref name="height"/>/<paramref name="width"/> are the pixel_values sides.
    /// With llava-1.5's config (336px, patch 14, 1 additional, default) this is 576.
    /// </summary>
    public static int NumImageTokens(int height, int width, LlavaPromptSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        int n = height / settings.PatchSize * (width / settings.PatchSize) + settings.NumAdditionalImageTokens;
        if (settings.VisionFeatureSelectStrategy == "default") n--;
        if (n <= 0)
            throw new FastMMException($"An image of {height}x{width} with patch size {settings.PatchSize} yields {n} image tokens.");
        return n;
    }

    /// <summary>
    /// HF's <c>sample.replace(image_token, image_token * num_image_tokens)</c>: all images share one count (taken from
    /// the first image's pixel_values, which are all the same size after CLIP/SigLIP preprocessing).
    /// </summary>
    public static string Expand(string text, int numImageTokens, string imageToken = "<image>")
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentException.ThrowIfNullOrEmpty(imageToken);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numImageTokens);
        return text.Replace(imageToken, string.Concat(Enumerable.Repeat(imageToken, numImageTokens)), StringComparison.Ordinal);
    }

    /// <summary>Expands <paramref name="text"/> for images preprocessed to <paramref name="pixelValues"/> ([3, H, W] or [B, 3, H, W]).</summary>
    public static string Expand(string text, PixelValues pixelValues, LlavaPromptSettings settings)
    {
        ArgumentNullException.ThrowIfNull(pixelValues);
        ArgumentNullException.ThrowIfNull(settings);
        return Expand(text, NumImageTokens(pixelValues.Height, pixelValues.Width, settings), settings.ImageToken);
    }
}
