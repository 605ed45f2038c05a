namespace FastMM.Runtime.Images;

/// <summary>
/// The individual steps of HF's slow image processors (transformers/image_transforms.py), as small reusable functions
/// so each model family's processor is just a composition of them.
/// </summary>
public static class ImageTransforms
{
    /// <summary>
    /// HF <c>get_resize_output_image_size(size=shortestEdge, default_to_square=False)</c>: the short side becomes
    /// <paramref name="shortestEdge"/> and the long side <c>int(shortestEdge * long / short)</c> (truncated, not rounded).
    /// </summary>
    public static (int Height, int Width) ShortestEdgeSize(int height, int width, int shortestEdge)
    {
        bool portrait = width <= height;
        int shortSide = portrait ? width : height, longSide = portrait ? height : width;
        // Python's int / int true division is correctly rounded; so is double division of exactly representable ints.
        int newLong = (int)((double)((long)shortestEdge * longSide) / shortSide);
        return portrait ? (newLong, shortestEdge) : (shortestEdge, newLong);
    }

    /// <summary>HF <c>resize</c> on a uint8 image: a plain PIL resize with reducing_gap=None.</summary>
    public static RgbImage Resize(RgbImage image, int height, int width, ResampleFilter filter) =>
        PilResampler.Resize(image, width, height, filter);

    /// <summary>
    /// HF <c>center_crop</c>: top = (h - ch) // 2, left = (w - cw) // 2 (floor division), and where the crop reaches
    /// outside the image it is zero-padded exactly as HF's pad-then-crop branch does.
    /// </summary>
    public static RgbImage CenterCrop(RgbImage image, int cropHeight, int cropWidth)
    {
        if (cropHeight <= 0 || cropWidth <= 0)
            throw new FastMMException($"Center crop size {cropHeight}x{cropWidth} is invalid: both sides must be positive.");
        if (cropHeight == image.Height && cropWidth == image.Width)
            return image;

        // Floor division, as Python's // (matters when the crop is larger than the image).
        int top = (int)Math.Floor((image.Height - cropHeight) / 2.0);
        int left = (int)Math.Floor((image.Width - cropWidth) / 2.0);

        // HF pads by ceil(diff / 2) and then shifts the window by the same amount, so output (y, x) is source
        // (y + top, x + left) whenever that lies inside the image, and zero elsewhere.
        var dst = new RgbImage(cropWidth, cropHeight);
        int x0 = Math.Max(0, -left), x1 = Math.Min(cropWidth, image.Width - left);
        if (x1 <= x0) return dst;
        for (int y = 0; y < cropHeight; y++)
        {
            int sy = y + top;
            if ((uint)sy >= (uint)image.Height) continue;
            image.Row(sy).Slice((x0 + left) * 3, (x1 - x0) * 3).CopyTo(dst.Row(y).Slice(x0 * 3));
        }
        return dst;
    }

    /// <summary>
    /// HF <c>rescale</c> then <c>normalize</c>, writing channels-first [3, H, W] into <paramref name="destination"/>.
    /// Matches numpy's rounding: rescale multiplies in double and casts to float32; normalize is (x - mean) / std
    /// evaluated in float32 with float32 mean/std.
    /// </summary>
    public static void RescaleNormalizeToChw(
        RgbImage image, Span<float> destination,
        double? rescaleFactor, ReadOnlySpan<float> mean, ReadOnlySpan<float> std)
    {
        int plane = image.Width * image.Height;
        if (destination.Length != 3 * plane)
            throw new ArgumentException($"Destination holds {destination.Length} floats; [3, {image.Height}, {image.Width}] needs {3 * plane}.", nameof(destination));
        bool normalize = !mean.IsEmpty;
        if (normalize && (mean.Length != 3 || std.Length != 3))
            throw new ArgumentException("mean and std need 3 values (one per RGB channel).");

        // 256-entry lookup per channel: each uint8 value maps to one float, computed with the exact numpy op order.
        Span<float> lut = stackalloc float[3 * 256];
        for (int c = 0; c < 3; c++)
        {
            for (int v = 0; v < 256; v++)
            {
                float x = rescaleFactor is double f ? (float)(v * f) : v;
                if (normalize) x = (x - mean[c]) / std[c];
                lut[c * 256 + v] = x;
            }
        }

        ReadOnlySpan<byte> px = image.Pixels;
        Span<float> r = destination[..plane], g = destination.Slice(plane, plane), b = destination.Slice(2 * plane, plane);
        for (int i = 0, s = 0; i < plane; i++, s += 3)
        {
            r[i] = lut[px[s]];
            g[i] = lut[256 + px[s + 1]];
            b[i] = lut[512 + px[s + 2]];
        }
    }
}
