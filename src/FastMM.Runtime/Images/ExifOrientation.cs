using SkiaSharp;

namespace FastMM.Runtime.Images;

/// <summary>
/// Applies an EXIF orientation (tag 0x0112, values 1..8) the way <c>PIL.ImageOps.exif_transpose</c> does, so the
/// result is the image as it should be displayed.
/// </summary>
public static class ExifOrientation
{
    public static RgbImage Apply(RgbImage src, SKEncodedOrigin origin) => Apply(src, (int)origin);

    /// <param name="orientation">EXIF value 1..8; anything else (0 = missing) means "as stored".</param>
    public static RgbImage Apply(RgbImage src, int orientation)
    {
        if (orientation is < 2 or > 8)
            return src;

        int w = src.Width, h = src.Height;
        // Orientations 5..8 swap the axes.
        bool swap = orientation >= 5;
        int dw = swap ? h : w, dh = swap ? w : h;
        var dst = new RgbImage(dw, dh);
        ReadOnlySpan<byte> s = src.Pixels;

        // Source pixel for destination (x, y) is (ax*x + bx*y + cx, ay*x + by*y + cy); as a linear pixel index that is
        // origin + x*stepX + y*stepY, so the inner loop is a strided copy.
        (int ax, int bx, int cx, int ay, int by, int cy) = orientation switch
        {
            2 => (-1, 0, w - 1, 0, 1, 0),       // mirror horizontal
            3 => (-1, 0, w - 1, 0, -1, h - 1),  // rotate 180
            4 => (1, 0, 0, 0, -1, h - 1),       // mirror vertical
            5 => (0, 1, 0, 1, 0, 0),            // transpose
            6 => (0, 1, 0, -1, 0, h - 1),       // rotate 90 clockwise
            7 => (0, -1, w - 1, -1, 0, h - 1),  // transverse
            _ => (0, -1, w - 1, 1, 0, 0),       // 8: rotate 90 counter-clockwise
        };
        int stepX = ay * w + ax, stepY = by * w + bx, origin = cy * w + cx;
        for (int y = 0; y < dh; y++)
        {
            Span<byte> row = dst.Row(y);
            int si = origin + y * stepY;
            for (int x = 0; x < dw; x++, si += stepX)
            {
                int s3 = si * 3;
                row[3 * x] = s[s3];
                row[3 * x + 1] = s[s3 + 1];
                row[3 * x + 2] = s[s3 + 2];
            }
        }
        return dst;
    }
}
