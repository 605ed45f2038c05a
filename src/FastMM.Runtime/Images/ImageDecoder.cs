using SkiaSharp;

namespace FastMM.Runtime.Images;

/// <summary>
/// Decodes JPEG, PNG, WebP, BMP and GIF (first frame) into <see cref="RgbImage"/> with the semantics HF pipelines get
/// from <c>PIL.ImageOps.exif_transpose(Image.open(p)).convert("RGB")</c>: EXIF orientation applied, alpha dropped
/// (not composited), grayscale replicated to R=G=B, no ICC colour management.
/// Every failure is a <see cref="FastMMException"/> that names the file and the problem.
/// </summary>
public static class ImageDecoder
{
    /// <summary>Decompression-bomb guard: refuse anything above this many pixels before allocating.</summary>
    public const long MaxPixels = 100_000_000;

    /// <summary>Encoded files above this size are refused before reading them into memory.</summary>
    public const long MaxFileBytes = 512L * 1024 * 1024;

    public static RgbImage Decode(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path))
            throw new FastMMException($"Image '{path}': is a directory, not an image file.");
        if (!File.Exists(path))
            throw new FastMMException($"Image '{path}': file not found.");

        byte[] bytes;
        try
        {
            var length = new FileInfo(path).Length;
            if (length > MaxFileBytes)
                throw new FastMMException($"Image '{path}': file is {length / (1024 * 1024)} MiB, above the {MaxFileBytes / (1024 * 1024)} MiB limit.");
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FastMMException($"Image '{path}': cannot be read ({e.Message}).", e);
        }
        return Decode(bytes, path);
    }

    public static RgbImage Decode(ReadOnlySpan<byte> data, string nameForErrors)
    {
        nameForErrors ??= "<memory>";
        if (data.IsEmpty)
            throw new FastMMException($"Image '{nameForErrors}': file is empty.");

        try
        {
            return DecodeCore(data, nameForErrors);
        }
        catch (FastMMException)
        {
            throw;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Skia or its interop should not throw for bad input, but never let a foreign exception type escape.
            throw new FastMMException($"Image '{nameForErrors}': cannot be decoded ({e.GetType().Name}: {e.Message}).", e);
        }
    }

    private static RgbImage DecodeCore(ReadOnlySpan<byte> data, string name)
    {
        using var skData = SKData.CreateCopy(data);
        using var codec = SKCodec.Create(skData)
            ?? throw new FastMMException($"Image '{name}': not a recognized image format (supported: JPEG, PNG, WebP, BMP, GIF).");

        var info = codec.Info;
        var format = codec.EncodedFormat;
        // Skia also decodes ICO, WBMP, AVIF, ...; accept only what the pipeline is specified and tested for.
        if (format is not (SKEncodedImageFormat.Jpeg or SKEncodedImageFormat.Png or SKEncodedImageFormat.Webp
            or SKEncodedImageFormat.Bmp or SKEncodedImageFormat.Gif))
            throw new FastMMException($"Image '{name}': {format} images are not supported (supported: JPEG, PNG, WebP, BMP, GIF).");
        if (info.Width <= 0 || info.Height <= 0)
            throw new FastMMException($"Image '{name}': invalid dimensions {info.Width}x{info.Height}.");
        long pixels = (long)info.Width * info.Height;
        if (pixels > MaxPixels)
            throw new FastMMException(
                $"Image '{name}': {info.Width}x{info.Height} ({pixels / 1e6:F0} megapixels) exceeds the {MaxPixels / 1_000_000} megapixel limit (possible decompression bomb).");

        byte[] rgba = DecodeRgba(codec, info, format, name);
        byte[] rgb = DropAlpha(rgba, info.Width * info.Height);
        var image = new RgbImage(info.Width, info.Height, rgb);
        return ExifOrientation.Apply(image, codec.EncodedOrigin);
    }

    /// <summary>Decodes the first frame to unpremultiplied RGBA8888 (unpremultiplied keeps colour under alpha, as PIL does).</summary>
    private static byte[] DecodeRgba(SKCodec codec, SKImageInfo info, SKEncodedImageFormat format, string name)
    {
        int w = info.Width, h = info.Height;

        // 16-bit PNG samples: Skia's 8-bit path keeps the high byte, as PIL's "RGB;16B" rawmode does (checked by the
        // rgb16 golden). Known deviation: PIL opens 16-bit *grayscale* as mode "I" and convert("RGB") clips values to
        // 0..255 (nearly white); we keep the high byte instead, which is what the image actually shows.
        return TryDecode(codec, new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Unpremul), name)
            ?? TryDecode(codec, new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Opaque), name)
            ?? throw new FastMMException($"Image '{name}': the {format} decoder cannot convert this image to RGB.");
    }

    /// <returns>The pixels, or null when Skia cannot convert to the requested layout (caller tries another).</returns>
    private static byte[]? TryDecode(SKCodec codec, SKImageInfo dst, string name)
    {
        // No colour space on dst: PIL ignores embedded ICC profiles, so Skia must not colour-manage either.
        dst.ColorSpace = null;
        var buffer = new byte[checked(dst.Width * dst.Height * 4)];
        SKCodecResult result;
        unsafe
        {
            fixed (byte* p = buffer)
                result = codec.GetPixels(dst, (IntPtr)p, dst.Width * 4, new SKCodecOptions(0));
        }
        return result switch
        {
            SKCodecResult.Success => buffer,
            SKCodecResult.InvalidConversion => null,
            SKCodecResult.IncompleteInput => throw new FastMMException($"Image '{name}': file is truncated (the {codec.EncodedFormat} data ends before the image is complete)."),
            SKCodecResult.ErrorInInput or SKCodecResult.InvalidInput => throw new FastMMException($"Image '{name}': corrupt {codec.EncodedFormat} data."),
            _ => throw new FastMMException($"Image '{name}': {codec.EncodedFormat} decoding failed ({result})."),
        };
    }

    private static byte[] DropAlpha(ReadOnlySpan<byte> rgba, int count)
    {
        var rgb = new byte[count * 3];
        Span<byte> dst = rgb;
        for (int i = 0, s = 0, d = 0; i < count; i++, s += 4, d += 3)
        {
            dst[d] = rgba[s];
            dst[d + 1] = rgba[s + 1];
            dst[d + 2] = rgba[s + 2];
        }
        return rgb;
    }
}
