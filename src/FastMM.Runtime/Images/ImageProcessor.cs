namespace FastMM.Runtime.Images;

/// <summary>Model input pixels, channels first: shape [3, H, W] for one image or [B, 3, H, W] for a batch.</summary>
public sealed class PixelValues
{
    public float[] Data { get; }
    public int[] Shape { get; }
    public int Height => Shape[^2];
    public int Width => Shape[^1];

    public PixelValues(float[] data, int[] shape)
    {
        long n = 1;
        foreach (int d in shape) n *= d;
        if (n != data.LongLength)
            throw new ArgumentException($"Shape [{string.Join(", ", shape)}] needs {n} values, got {data.LongLength}.");
        Data = data;
        Shape = shape;
    }

    public override string ToString() => $"PixelValues [{string.Join(", ", Shape)}]";
}

/// <summary>
/// An HF image processor reimplemented from its preprocessor_config.json. Subclasses compose the shared steps in
/// <see cref="ImageTransforms"/>; <see cref="FromConfigFile"/> picks the subclass from the config's processor type.
/// </summary>
public abstract class ImageProcessor
{
    /// <summary>Processor class names accepted in "image_processor_type" / "feature_extractor_type".</summary>
    public static IReadOnlyList<string> SupportedTypes { get; } =
        ["CLIPImageProcessor", "CLIPFeatureExtractor", "SiglipImageProcessor", "Idefics3ImageProcessor", "SmolVLMImageProcessor"];

    /// <summary>The processor type named in the config.</summary>
    public string ProcessorType { get; }

    /// <summary>The config file this processor came from (used in error messages).</summary>
    public string Source { get; }

    public bool DoResize { get; }
    public ResampleFilter Resample { get; }
    public bool DoRescale { get; }
    public double RescaleFactor { get; }
    public bool DoNormalize { get; }
    public IReadOnlyList<float> ImageMean => _mean;
    public IReadOnlyList<float> ImageStd => _std;
    private readonly float[] _mean, _std;
    public bool DoConvertRgb { get; }

    /// <summary>Reads the fields common to HF's slow processors, with HF's defaults for optional flags.</summary>
    protected ImageProcessor(PreprocessorConfig config, string processorType)
    {
        ProcessorType = processorType;
        Source = config.Source;
        DoResize = config.GetBool("do_resize", true);
        Resample = config.GetResample("resample", ResampleFilter.Bicubic);
        DoRescale = config.GetBool("do_rescale", true);
        RescaleFactor = config.GetDouble("rescale_factor", 1.0 / 255.0);
        DoNormalize = config.GetBool("do_normalize", true);
        _mean = DoNormalize ? config.GetChannelValues("image_mean", mustBePositive: false) : [];
        _std = DoNormalize ? config.GetChannelValues("image_std", mustBePositive: true) : [];
        // Decoded images are always RGB already (ImageDecoder converts like PIL's convert("RGB")), so this flag
        // is validated and kept for completeness only.
        DoConvertRgb = config.GetBool("do_convert_rgb", true);
    }

    public static ImageProcessor FromConfigFile(string path) => FromConfig(PreprocessorConfig.Load(path));

    public static ImageProcessor FromJson(string json, string sourceName) => FromConfig(PreprocessorConfig.Parse(json, sourceName));

    public static ImageProcessor FromConfig(PreprocessorConfig config)
    {
        string type = config.ProcessorType
            ?? throw new FastMMException(
                $"Preprocessor config '{config.Source}': required field 'image_processor_type' (or 'feature_extractor_type') is missing; supported: {string.Join(", ", SupportedTypes)}.");
        return type switch
        {
            "CLIPImageProcessor" or "CLIPFeatureExtractor" => new ClipImageProcessor(config, type),
            "SiglipImageProcessor" => new SiglipImageProcessor(config, type),
            // SmolVLM's processor is HF's Idefics3 one under another name.
            "Idefics3ImageProcessor" or "SmolVLMImageProcessor" => new Idefics3ImageProcessor(config, type),
            _ => throw new FastMMException(
                $"Preprocessor config '{config.Source}': field 'image_processor_type' is '{type}', which is not supported; supported: {string.Join(", ", SupportedTypes)}."),
        };
    }

    /// <summary>Resizes/crops in uint8 (everything before rescale); the geometry differs per model family.</summary>
    protected abstract RgbImage ApplyGeometry(RgbImage image);

    /// <summary>The [3, H, W] pixel_values for one image.</summary>
    public PixelValues Preprocess(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var prepared = ApplyGeometry(image);
        var data = new float[3 * prepared.Width * prepared.Height];
        WritePixels(prepared, data);
        return new PixelValues(data, [3, prepared.Height, prepared.Width]);
    }

    /// <summary>Decodes the file (EXIF orientation applied) and preprocesses it.</summary>
    public PixelValues Preprocess(string imagePath) => Preprocess(ImageDecoder.Decode(imagePath));

    /// <summary>[B, 3, H, W] pixel_values; all images must come out the same size (true whenever the output is fixed).</summary>
    public PixelValues PreprocessBatch(IReadOnlyList<RgbImage> images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.Count == 0)
            throw new FastMMException("Cannot preprocess an empty batch of images.");
        var prepared = new RgbImage[images.Count];
        for (int i = 0; i < images.Count; i++)
        {
            prepared[i] = ApplyGeometry(images[i]);
            if (prepared[i].Width != prepared[0].Width || prepared[i].Height != prepared[0].Height)
                throw new FastMMException(
                    $"Cannot batch images from '{Source}': image {i} preprocesses to {prepared[i].Height}x{prepared[i].Width} but image 0 to {prepared[0].Height}x{prepared[0].Width}.");
        }
        int h = prepared[0].Height, w = prepared[0].Width, per = 3 * h * w;
        var data = new float[(long)per * images.Count];
        for (int i = 0; i < prepared.Length; i++)
            WritePixels(prepared[i], data.AsSpan(i * per, per));
        return new PixelValues(data, [images.Count, 3, h, w]);
    }

    private void WritePixels(RgbImage image, Span<float> destination) =>
        ImageTransforms.RescaleNormalizeToChw(
            image, destination,
            DoRescale ? RescaleFactor : null,
            _mean, _std); // empty when normalization is off
}

/// <summary>
/// HF CLIPImageProcessor: resize (shortest edge, keep aspect; or exact height/width) → center crop → rescale → normalize.
/// </summary>
public sealed class ClipImageProcessor : ImageProcessor
{
    public SizeSpec Size { get; }
    public bool DoCenterCrop { get; }
    public int CropHeight { get; }
    public int CropWidth { get; }

    internal ClipImageProcessor(PreprocessorConfig config, string type) : base(config, type)
    {
        // get_size_dict(size, default_to_square=False): a bare int means shortest edge.
        Size = DoResize ? config.GetSize("size", intIsShortestEdge: true) : default;
        // Legacy CLIP configs: "use_square_size" turns a shortest edge into a square resize.
        if (Size.IsShortestEdge && config.GetBool("use_square_size", false))
            Size = SizeSpec.Exact(Size.ShortestEdge, Size.ShortestEdge);
        DoCenterCrop = config.GetBool("do_center_crop", true);
        if (DoCenterCrop)
        {
            // get_size_dict(crop_size, default_to_square=True): a bare int means a square crop.
            var crop = config.GetSize("crop_size", intIsShortestEdge: false);
            if (crop.IsShortestEdge)
                throw new FastMMException($"Preprocessor config '{config.Source}': field 'crop_size' must give \"height\" and \"width\" (or one integer), not shortest_edge.");
            (CropHeight, CropWidth) = (crop.Height, crop.Width);
        }
    }

    protected override RgbImage ApplyGeometry(RgbImage image)
    {
        if (DoResize)
        {
            var (h, w) = Size.Resolve(image.Height, image.Width);
            image = ImageTransforms.Resize(image, h, w, Resample);
        }
        if (DoCenterCrop)
            image = ImageTransforms.CenterCrop(image, CropHeight, CropWidth);
        return image;
    }
}

/// <summary>HF SiglipImageProcessor: resize straight to {height, width} (no aspect ratio, no crop) → rescale → normalize.</summary>
public sealed class SiglipImageProcessor : ImageProcessor
{
    public int Height { get; }
    public int Width { get; }

    internal SiglipImageProcessor(PreprocessorConfig config, string type) : base(config, type)
    {
        if (!DoResize) return;
        var size = config.GetSize("size", intIsShortestEdge: true);
        // HF reads size["height"] and size["width"]; the shortest-edge forms fail there, so refuse them here.
        if (size.IsShortestEdge)
            throw new FastMMException($"Preprocessor config '{config.Source}': field 'size' must be {{\"height\": h, \"width\": w}} for {type}.");
        (Height, Width) = (size.Height, size.Width);
    }

    protected override RgbImage ApplyGeometry(RgbImage image) =>
        DoResize ? ImageTransforms.Resize(image, Height, Width, Resample) : image;
}
