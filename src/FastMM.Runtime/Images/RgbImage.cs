namespace FastMM.Runtime.Images;

/// <summary>
/// An 8-bit RGB image, rows top to bottom, pixels interleaved R,G,B (the layout of a PIL "RGB" image / numpy HWC uint8).
/// </summary>
public sealed class RgbImage
{
    public int Width { get; }
    public int Height { get; }

    /// <summary>Width * Height * 3 bytes.</summary>
    public byte[] Pixels { get; }

    public RgbImage(int width, int height, byte[] pixels)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentNullException.ThrowIfNull(pixels);
        if (pixels.LongLength != (long)width * height * 3)
            throw new ArgumentException($"Expected {(long)width * height * 3} bytes for a {width}x{height} RGB image, got {pixels.LongLength}.", nameof(pixels));
        Width = width;
        Height = height;
        Pixels = pixels;
    }

    /// <summary>A zero-filled (black) image.</summary>
    public RgbImage(int width, int height) : this(width, height, new byte[checked(width * height * 3)]) { }

    public int Stride => Width * 3;

    public Span<byte> Row(int y) => Pixels.AsSpan(y * Stride, Stride);

    public ReadOnlySpan<byte> GetPixel(int x, int y) => Pixels.AsSpan((y * Width + x) * 3, 3);

    public RgbImage Clone() => new(Width, Height, (byte[])Pixels.Clone());

    public override string ToString() => $"RgbImage {Width}x{Height}";
}
