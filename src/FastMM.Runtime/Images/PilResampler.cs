namespace FastMM.Runtime.Images;

/// <summary>PIL's resampling filters; the numeric values are PIL's enum (what preprocessor_config.json "resample" holds).</summary>
public enum ResampleFilter
{
    Nearest = 0,
    Lanczos = 1,
    Bilinear = 2,
    Bicubic = 3,
    Box = 4,
    Hamming = 5,
}

/// <summary>
/// Bit-exact reimplementation of Pillow's <c>Image.resize(size, resample, reducing_gap=None)</c> for 8-bit RGB images
/// (libImaging/Resample.c for the convolution filters, Geometry.c ImagingScaleAffine for NEAREST).
/// HF image processors resize through PIL, so matching it exactly is what keeps pixel_values identical.
/// </summary>
public static class PilResampler
{
    // Pillow's 8-bit path: coefficients in fixed point with 32 - 8 - 2 fractional bits, leaving room for 8-bit
    // pixels and the negative lobes of bicubic/lanczos without overflowing an int accumulator.
    private const int PrecisionBits = 32 - 8 - 2;

    public static RgbImage Resize(RgbImage src, int width, int height, ResampleFilter filter)
    {
        ArgumentNullException.ThrowIfNull(src);
        if (width <= 0 || height <= 0)
            throw new FastMMException($"Resize target {width}x{height} is invalid: both sides must be positive.");
        if (width == src.Width && height == src.Height)
            return src.Clone(); // PIL returns a copy without resampling

        if (filter == ResampleFilter.Nearest)
            return ResizeNearest(src, width, height);

        var (kernel, support) = GetFilter(filter);

        bool needHorizontal = width != src.Width;
        bool needVertical = height != src.Height;
        var horiz = Coefficients.Compute(src.Width, width, kernel, support);
        var vert = Coefficients.Compute(src.Height, height, kernel, support);

        RgbImage current = src;
        int rowOffset = 0;
        if (needHorizontal)
        {
            // Only the source rows the vertical pass will read, as Pillow does (identical output, less work).
            int firstRow = vert.Bounds[0];
            int lastRow = vert.Bounds[2 * (height - 1)] + vert.Bounds[2 * (height - 1) + 1];
            current = HorizontalPass(src, firstRow, lastRow - firstRow, horiz);
            rowOffset = firstRow;
        }
        if (needVertical)
            current = VerticalPass(current, rowOffset, vert);
        return current;
    }

    private delegate double Kernel(double x);

    private static (Kernel kernel, double support) GetFilter(ResampleFilter filter) => filter switch
    {
        ResampleFilter.Box => (BoxKernel, 0.5),
        ResampleFilter.Bilinear => (BilinearKernel, 1.0),
        ResampleFilter.Hamming => (HammingKernel, 1.0),
        ResampleFilter.Bicubic => (BicubicKernel, 2.0),
        ResampleFilter.Lanczos => (LanczosKernel, 3.0),
        _ => throw new FastMMException($"Unknown resample filter {(int)filter} (PIL values: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)."),
    };

    // The kernels keep Pillow's exact expression order so every double rounds the same way.
    private static double BoxKernel(double x) => x > -0.5 && x <= 0.5 ? 1.0 : 0.0;

    private static double BilinearKernel(double x)
    {
        if (x < 0.0) x = -x;
        return x < 1.0 ? 1.0 - x : 0.0;
    }

    private static double HammingKernel(double x)
    {
        if (x < 0.0) x = -x;
        if (x == 0.0) return 1.0;
        if (x >= 1.0) return 0.0;
        x *= Math.PI;
        return Math.Sin(x) / x * (0.54 + 0.46 * Math.Cos(x));
    }

    private static double BicubicKernel(double x)
    {
        const double a = -0.5; // Pillow's choice; other libraries use -0.75
        if (x < 0.0) x = -x;
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
    }

    private static double Sinc(double x)
    {
        if (x == 0.0) return 1.0;
        x *= Math.PI;
        return Math.Sin(x) / x;
    }

    private static double LanczosKernel(double x) => -3.0 <= x && x < 3.0 ? Sinc(x) * Sinc(x / 3) : 0.0;

    /// <summary>Per-output-pixel source window and fixed-point weights (Pillow's precompute_coeffs + normalize_coeffs_8bpc).</summary>
    private sealed class Coefficients
    {
        public required int KernelSize { get; init; }
        /// <summary>Pairs (first source index, count) per output index.</summary>
        public required int[] Bounds { get; init; }
        public required int[] Weights { get; init; }

        public static Coefficients Compute(int inSize, int outSize, Kernel kernel, double filterSupport)
        {
            // Downscaling widens the kernel by the scale factor: this is the antialiasing.
            double scale = (double)inSize / outSize;
            double filterScale = Math.Max(scale, 1.0);
            double support = filterSupport * filterScale;
            int ksize = (int)Math.Ceiling(support) * 2 + 1;

            var bounds = new int[outSize * 2];
            var weights = new int[outSize * ksize];
            Span<double> k = ksize <= 256 ? stackalloc double[ksize] : new double[ksize];
            double invScale = 1.0 / filterScale;

            for (int xx = 0; xx < outSize; xx++)
            {
                double center = (xx + 0.5) * scale;
                // C casts truncate toward zero; the max/min clamps make that the same as Pillow's rounding here.
                int xmin = Math.Max((int)(center - support + 0.5), 0);
                int xmax = Math.Min((int)(center + support + 0.5), inSize) - xmin;

                double sum = 0.0;
                for (int x = 0; x < xmax; x++)
                {
                    double w = kernel((x + xmin - center + 0.5) * invScale);
                    k[x] = w;
                    sum += w;
                }
                Span<int> row = weights.AsSpan(xx * ksize, ksize);
                for (int x = 0; x < xmax; x++)
                {
                    double w = sum != 0.0 ? k[x] / sum : k[x];
                    // Round half away from zero into fixed point, as normalize_coeffs_8bpc does.
                    row[x] = w < 0 ? (int)(-0.5 + w * (1 << PrecisionBits)) : (int)(0.5 + w * (1 << PrecisionBits));
                }
                bounds[2 * xx] = xmin;
                bounds[2 * xx + 1] = xmax;
            }
            return new Coefficients { KernelSize = ksize, Bounds = bounds, Weights = weights };
        }
    }

    /// <summary>Fixed-point sum back to a byte: drop the fraction bits and saturate (Pillow's clip8).</summary>
    private static byte Clip8(int v)
    {
        if (v >= 255 << PrecisionBits) return 255;
        if (v <= 0) return 0;
        return (byte)(v >> PrecisionBits);
    }

    private static RgbImage HorizontalPass(RgbImage src, int firstRow, int rowCount, Coefficients c)
    {
        int outW = c.Bounds.Length / 2;
        var dst = new RgbImage(outW, rowCount);
        const int half = 1 << (PrecisionBits - 1); // rounding bias
        for (int y = 0; y < rowCount; y++)
        {
            ReadOnlySpan<byte> inRow = src.Row(y + firstRow);
            Span<byte> outRow = dst.Row(y);
            for (int xx = 0; xx < outW; xx++)
            {
                int xmin = c.Bounds[2 * xx], count = c.Bounds[2 * xx + 1];
                ReadOnlySpan<int> k = c.Weights.AsSpan(xx * c.KernelSize, count);
                ReadOnlySpan<byte> px = inRow.Slice(xmin * 3, count * 3);
                int r = half, g = half, b = half;
                for (int x = 0; x < k.Length; x++)
                {
                    int w = k[x];
                    r += px[3 * x] * w;
                    g += px[3 * x + 1] * w;
                    b += px[3 * x + 2] * w;
                }
                outRow[3 * xx] = Clip8(r);
                outRow[3 * xx + 1] = Clip8(g);
                outRow[3 * xx + 2] = Clip8(b);
            }
        }
        return dst;
    }

    /// <param name="rowOffset">Source row index that <paramref name="src"/> row 0 corresponds to.</param>
    private static RgbImage VerticalPass(RgbImage src, int rowOffset, Coefficients c)
    {
        int outH = c.Bounds.Length / 2;
        int w = src.Width, stride = src.Stride;
        var dst = new RgbImage(w, outH);
        const int half = 1 << (PrecisionBits - 1);
        ReadOnlySpan<byte> pixels = src.Pixels;
        Span<int> acc = new int[stride];
        for (int yy = 0; yy < outH; yy++)
        {
            int ymin = c.Bounds[2 * yy] - rowOffset, count = c.Bounds[2 * yy + 1];
            ReadOnlySpan<int> k = c.Weights.AsSpan(yy * c.KernelSize, count);
            acc.Fill(half);
            // Row-major accumulation: same integer sums as Pillow's per-pixel loop (int addition is exact).
            for (int y = 0; y < count; y++)
            {
                int weight = k[y];
                ReadOnlySpan<byte> inRow = pixels.Slice((ymin + y) * stride, stride);
                for (int i = 0; i < stride; i++)
                    acc[i] += inRow[i] * weight;
            }
            Span<byte> outRow = dst.Row(yy);
            for (int i = 0; i < stride; i++)
                outRow[i] = Clip8(acc[i]);
        }
        return dst;
    }

    /// <summary>
    /// PIL resizes with NEAREST through an affine scale (Geometry.c ImagingScaleAffine), not the convolution code:
    /// sample positions start at half a step and are accumulated in double, then truncated.
    /// </summary>
    private static RgbImage ResizeNearest(RgbImage src, int width, int height)
    {
        double stepX = (double)src.Width / width, stepY = (double)src.Height / height;
        var xs = new int[width];
        double xo = stepX * 0.5;
        for (int x = 0; x < width; x++, xo += stepX)
            xs[x] = xo < 0.0 ? -1 : (int)xo;

        var dst = new RgbImage(width, height); // out-of-range samples stay black, as with PIL's fill
        double yo = stepY * 0.5;
        for (int y = 0; y < height; y++, yo += stepY)
        {
            int sy = yo < 0.0 ? -1 : (int)yo;
            if ((uint)sy >= (uint)src.Height) continue;
            ReadOnlySpan<byte> inRow = src.Row(sy);
            Span<byte> outRow = dst.Row(y);
            for (int x = 0; x < width; x++)
            {
                int sx = xs[x];
                if ((uint)sx >= (uint)src.Width) continue;
                inRow.Slice(sx * 3, 3).CopyTo(outRow.Slice(x * 3, 3));
            }
        }
        return dst;
    }
}
