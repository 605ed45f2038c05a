using System.Text.Json;

namespace FastMM.Runtime.Images;

/// <summary>
/// HF's slow Idefics3ImageProcessor (also used, unchanged, as SmolVLMImageProcessor): resize so the longest edge is
/// size["longest_edge"], then either split into max_image_size tiles plus a squared global image, or just square the
/// image to max_image_size; rescale, normalize, and pad every prompt to the same frame count and size.
/// </summary>
/// <remarks>
/// Inputs are 8-bit RGB (see <see cref="ImageDecoder"/>). HF composites RGBA onto white and resizes grayscale images
/// as palette images (nearest neighbour); neither case can reach this class, so images with alpha or a single channel
/// can differ from HF.
/// </remarks>
public sealed class Idefics3ImageProcessor : ImageProcessor
{
    /// <summary>HF's absolute cap on either side after the longest-edge resize (image_processing_idefics3.MAX_IMAGE_SIZE).</summary>
    public const int MaxImageSide = 4096;

    /// <summary>The resize target: a longest edge (aspect kept) or, when 0, the exact <see cref="ResizeHeight"/> x <see cref="ResizeWidth"/>.</summary>
    public int LongestEdge { get; }
    public int ResizeHeight { get; }
    public int ResizeWidth { get; }

    /// <summary>max_image_size["longest_edge"]: the side of every tile and of the global image.</summary>
    public int TileSize { get; }

    public bool DoImageSplitting { get; }
    public bool DoPad { get; }

    /// <summary>The filter actually used; HF's default for this processor is LANCZOS, not the base class's BICUBIC.</summary>
    public new ResampleFilter Resample { get; }

    private readonly float[] _mean, _std;

    internal Idefics3ImageProcessor(PreprocessorConfig config, string type) : base(config, type)
    {
        Resample = config.Has("resample") ? base.Resample : ResampleFilter.Lanczos;
        DoImageSplitting = config.GetBool("do_image_splitting", true);
        DoPad = config.GetBool("do_pad", true);
        _mean = ImageMean.ToArray();
        _std = ImageStd.ToArray();

        var root = config.Root;
        // HF defaults: size {"longest_edge": 4 * 364}, max_image_size {"longest_edge": 364}.
        if (root.TryGetProperty("size", out var size) && size.ValueKind != JsonValueKind.Null)
        {
            if (size.ValueKind == JsonValueKind.Object && size.TryGetProperty("longest_edge", out var le) && le.ValueKind != JsonValueKind.Null)
                LongestEdge = ReadSide(config, "size.longest_edge", le);
            else if (size.ValueKind == JsonValueKind.Object && size.TryGetProperty("height", out var h) && size.TryGetProperty("width", out var w))
                (ResizeHeight, ResizeWidth) = (ReadSide(config, "size.height", h), ReadSide(config, "size.width", w));
            else
                throw Bad(config, "size", "an object with \"longest_edge\" (or \"height\" and \"width\")", size);
        }
        else LongestEdge = 4 * 364;

        if (root.TryGetProperty("max_image_size", out var max) && max.ValueKind != JsonValueKind.Null)
        {
            if (max.ValueKind != JsonValueKind.Object || !max.TryGetProperty("longest_edge", out var m))
                throw Bad(config, "max_image_size", "an object with \"longest_edge\"", max);
            TileSize = ReadSide(config, "max_image_size.longest_edge", m);
        }
        else TileSize = 364;
    }

    /// <summary>
    /// The single-frame path of <see cref="ImageProcessor.Preprocess(RgbImage)"/>: only meaningful without splitting,
    /// where each image becomes exactly one TileSize x TileSize frame.
    /// </summary>
    protected override RgbImage ApplyGeometry(RgbImage image)
    {
        if (DoImageSplitting)
            throw new FastMMException(
                $"Preprocessor config '{Source}': do_image_splitting is true, so an image becomes several frames; use Idefics3ImageProcessor.Process instead of Preprocess.");
        var frames = Frames(image, out _, out _);
        return frames[0];
    }

    /// <summary>HF <c>_resize_output_size_rescale_to_max_len</c> then <c>_resize_output_size_scale_below_upper_bound(4096)</c>.</summary>
    public static (int Height, int Width) LongestEdgeSize(int height, int width, int longestEdge)
    {
        // Python's float division and int() truncation; the evenness bump runs before the min-size clamp, as in HF.
        double aspect = (double)width / height;
        if (width >= height)
        {
            width = longestEdge;
            height = (int)(width / aspect);
            if (height % 2 != 0) height++;
        }
        else
        {
            height = longestEdge;
            width = (int)(height * aspect);
            if (width % 2 != 0) width++;
        }
        (height, width) = (Math.Max(height, 1), Math.Max(width, 1));

        aspect = (double)width / height;
        if (width >= height && width > MaxImageSide)
        {
            width = MaxImageSide;
            height = (int)(width / aspect);
        }
        else if (height > width && height > MaxImageSide)
        {
            height = MaxImageSide;
            width = (int)(height * aspect);
        }
        return (Math.Max(height, 1), Math.Max(width, 1));
    }

    /// <summary>
    /// HF <c>resize_for_vision_encoder</c>: the long side goes up to a multiple of <paramref name="tileSize"/>, the
    /// short side follows the aspect ratio (truncated) and is then also rounded up to a multiple.
    /// </summary>
    public static (int Height, int Width) VisionEncoderSize(int height, int width, int tileSize)
    {
        double aspect = (double)width / height;
        if (width >= height)
        {
            width = CeilToMultiple(width, tileSize);
            height = CeilToMultiple((int)(width / aspect), tileSize);
        }
        else
        {
            height = CeilToMultiple(height, tileSize);
            width = CeilToMultiple((int)(height * aspect), tileSize);
        }
        return (height, width);
    }

    // math.ceil(x / m) * m with Python's float division.
    private static int CeilToMultiple(int x, int m) => (int)Math.Ceiling((double)x / m) * m;

    /// <summary>
    /// The uint8 frames one image becomes, in HF order: row-major tiles then the global image, or one squared image
    /// when not splitting. <paramref name="rows"/>/<paramref name="cols"/> are 0 when the image was not split.
    /// </summary>
    public IReadOnlyList<RgbImage> Frames(RgbImage image, out int rows, out int cols)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (DoResize)
        {
            var (h, w) = LongestEdge > 0 ? LongestEdgeSize(image.Height, image.Width, LongestEdge) : (ResizeHeight, ResizeWidth);
            image = ImageTransforms.Resize(image, h, w, Resample);
        }

        rows = cols = 0;
        if (!DoImageSplitting)
            return [ImageTransforms.Resize(image, TileSize, TileSize, Resample)];

        var (vh, vw) = VisionEncoderSize(image.Height, image.Width, TileSize);
        if (vh <= 0 || vw <= 0)
            throw new FastMMException($"Image {image.Width}x{image.Height} from '{Source}' resizes to {vw}x{vh} for the vision encoder.");
        image = ImageTransforms.Resize(image, vh, vw, Resample);
        if (image.Height <= TileSize && image.Width <= TileSize)
            return [image];

        // HF's split_image: tile sides are ceil(side / count), which equals TileSize here since sides are multiples.
        rows = (int)Math.Ceiling((double)image.Height / TileSize);
        cols = (int)Math.Ceiling((double)image.Width / TileSize);
        int tileH = (int)Math.Ceiling((double)image.Height / rows), tileW = (int)Math.Ceiling((double)image.Width / cols);
        var frames = new List<RgbImage>(rows * cols + 1);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                frames.Add(Crop(image, c * tileW, r * tileH, Math.Min((c + 1) * tileW, image.Width), Math.Min((r + 1) * tileH, image.Height)));
        frames.Add(ImageTransforms.Resize(image, TileSize, TileSize, Resample));
        return frames;
    }

    private static RgbImage Crop(RgbImage image, int x0, int y0, int x1, int y1)
    {
        var dst = new RgbImage(x1 - x0, y1 - y0);
        for (int y = y0; y < y1; y++)
            image.Row(y).Slice(x0 * 3, dst.Stride).CopyTo(dst.Row(y - y0));
        return dst;
    }

    /// <summary>One prompt's images: all their frames stacked to [N, 3, H, W] with a [N, H, W] mask.</summary>
    public Idefics3Output Process(IReadOnlyList<RgbImage> images)
    {
        ArgumentNullException.ThrowIfNull(images);
        var batch = ProcessBatch([images]);
        int n = batch.MaxFrames, h = batch.Height, w = batch.Width;
        return new Idefics3Output(
            batch.Grids[0],
            new PixelValues(batch.PixelValues.Data, [n, 3, h, w]),
            batch.PixelAttentionMask, [n, h, w]);
    }

    /// <summary>
    /// HF's batched output: prompt i's frames at [i, 0..], padded with all-zero frames (mask false) up to the largest
    /// frame count, and every frame padded bottom/right to the largest height and width.
    /// </summary>
    public Idefics3BatchOutput ProcessBatch(IReadOnlyList<IReadOnlyList<RgbImage>> prompts)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        if (prompts.Count == 0 || prompts.All(p => p.Count == 0))
            throw new FastMMException("Cannot preprocess a batch without images.");

        var frames = new List<RgbImage>[prompts.Count];
        var grids = new (int Rows, int Cols)[prompts.Count][];
        for (int i = 0; i < prompts.Count; i++)
        {
            frames[i] = [];
            grids[i] = new (int, int)[prompts[i].Count];
            for (int j = 0; j < prompts[i].Count; j++)
            {
                frames[i].AddRange(Frames(prompts[i][j], out int rows, out int cols));
                grids[i][j] = (rows, cols);
            }
        }

        int maxN = frames.Max(f => f.Count);
        int maxH = frames.SelectMany(f => f).Max(f => f.Height), maxW = frames.SelectMany(f => f).Max(f => f.Width);
        if (!DoPad && frames.SelectMany(f => f).Any(f => f.Height != maxH || f.Width != maxW))
            throw new FastMMException($"Preprocessor config '{Source}': do_pad is false but the frames differ in size, so they cannot be stacked.");

        int plane = maxH * maxW;
        var data = new float[checked((long)prompts.Count * maxN * 3 * plane)];
        var mask = new bool[checked((long)prompts.Count * maxN * plane)];
        var chw = new float[3 * plane];
        for (int i = 0; i < prompts.Count; i++)
        {
            for (int j = 0; j < frames[i].Count; j++)
            {
                var f = frames[i][j];
                long index = (long)i * maxN + j;
                int fPlane = f.Width * f.Height;
                ImageTransforms.RescaleNormalizeToChw(f, chw.AsSpan(0, 3 * fPlane), DoRescale ? RescaleFactor : null, _mean, _std);
                // Copy each channel row into the top-left of the padded frame; the rest stays 0 as in HF's pad().
                for (int c = 0; c < 3; c++)
                    for (int y = 0; y < f.Height; y++)
                        chw.AsSpan(c * fPlane + y * f.Width, f.Width).CopyTo(data.AsSpan((int)((index * 3 + c) * plane + y * maxW)));
                for (int y = 0; y < f.Height; y++)
                    mask.AsSpan((int)(index * plane + y * maxW), f.Width).Fill(true);
            }
        }
        return new Idefics3BatchOutput(
            grids, new PixelValues(data, [prompts.Count, maxN, 3, maxH, maxW]), mask,
            [prompts.Count, maxN, maxH, maxW], frames.Select(f => f.Count).ToArray());
    }

    private static int ReadSide(PreprocessorConfig config, string field, JsonElement v)
    {
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n) || n <= 0 || n > 65536)
            throw Bad(config, field, "a positive integer (at most 65536)", v);
        return n;
    }

    private static FastMMException Bad(PreprocessorConfig config, string field, string expected, JsonElement actual)
    {
        string shown = actual.GetRawText();
        if (shown.Length > 80) shown = shown[..80] + "...";
        return new FastMMException($"Preprocessor config '{config.Source}': field '{field}' must be {expected}, got {shown}.");
    }
}

/// <summary>Frames of one prompt: pixel_values [N, 3, H, W], pixel_attention_mask [N, H, W] (true on real pixels).</summary>
public sealed record Idefics3Output(
    IReadOnlyList<(int Rows, int Cols)> Grids, PixelValues PixelValues, bool[] PixelAttentionMask, int[] MaskShape);

/// <summary>
/// Several prompts: pixel_values [B, maxN, 3, H, W] and pixel_attention_mask [B, maxN, H, W]; <see cref="FrameCounts"/>
/// gives each prompt's real frame count (the rest are zero padding).
/// </summary>
public sealed record Idefics3BatchOutput(
    IReadOnlyList<IReadOnlyList<(int Rows, int Cols)>> Grids, PixelValues PixelValues, bool[] PixelAttentionMask,
    int[] MaskShape, IReadOnlyList<int> FrameCounts)
{
    public int MaxFrames => PixelValues.Shape[1];
    public int Height => PixelValues.Height;
    public int Width => PixelValues.Width;
}
