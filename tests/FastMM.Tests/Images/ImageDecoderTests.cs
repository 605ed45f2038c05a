using FastMM.Runtime.Images;
using Xunit;
using Xunit.Abstractions;

namespace FastMM.Tests.Images;

public class ImageDecoderTests(ITestOutputHelper output)
{
    // JPEG: Skia and PIL both use libjpeg-turbo but may differ in IDCT/upsampling details; lossless formats must match.
    private const int JpegTolerance = 3;

    public static TheoryData<string> AllImages()
    {
        var data = new TheoryData<string>();
        foreach (var n in ImageTestData.Images.Concat(ImageTestData.OrientationImages)) data.Add(n);
        return data;
    }

    internal static int MaxAbsDiff(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }

    [Theory]
    [MemberData(nameof(AllImages))]
    public void Decode_MatchesPilExifTransposeConvertRgb(string name)
    {
        var golden = NpyTestReader.Read(ImageTestData.File($"decoded/{name}.npy"));
        var image = ImageDecoder.Decode(ImageTestData.File(name));

        Assert.Equal((golden.Shape[1], golden.Shape[0]), (image.Width, image.Height));
        int diff = MaxAbsDiff(golden.AsUInt8(), image.Pixels);
        output.WriteLine($"{name}: {image.Width}x{image.Height}, max |Skia - PIL| = {diff}");
        Assert.True(diff <= (ImageTestData.IsJpeg(name) ? JpegTolerance : 0), $"{name}: max abs diff {diff}");
    }

    [Fact]
    public void Decode_Span_MatchesPath()
    {
        string path = ImageTestData.File("rgba_64x48.png");
        var a = ImageDecoder.Decode(path);
        var b = ImageDecoder.Decode(File.ReadAllBytes(path), "rgba_64x48.png");
        Assert.Equal(a.Pixels, b.Pixels);
    }

    [Fact]
    public void Decode_Rgba_DropsAlphaWithoutCompositing()
    {
        // The fully transparent top-left corner must keep its stored colour (PIL convert("RGB") drops alpha).
        var golden = NpyTestReader.Read(ImageTestData.File("decoded/rgba_64x48.png.npy")).AsUInt8();
        var image = ImageDecoder.Decode(ImageTestData.File("rgba_64x48.png"));
        Assert.Equal(golden.AsSpan(0, 8 * 3).ToArray(), image.Pixels.AsSpan(0, 8 * 3).ToArray());
        Assert.Contains(image.Pixels.Take(8 * 3), b => b != 0);
    }

    [Fact]
    public void Decode_Grayscale_ReplicatesChannels()
    {
        var image = ImageDecoder.Decode(ImageTestData.File("gray_37x23.png"));
        for (int i = 0; i < image.Pixels.Length; i += 3)
        {
            Assert.Equal(image.Pixels[i], image.Pixels[i + 1]);
            Assert.Equal(image.Pixels[i], image.Pixels[i + 2]);
        }
    }

    [Theory]
    [InlineData("exif6_64x48.jpg", 48, 64)]  // rotate 90: width and height swap
    [InlineData("exif3_37x23.jpg", 37, 23)]  // rotate 180: same size
    public void Decode_AppliesExifOrientation(string name, int width, int height)
    {
        var image = ImageDecoder.Decode(ImageTestData.File(name));
        Assert.Equal((width, height), (image.Width, image.Height));
    }

    [Fact]
    public void Orientation_AllEightMatchPil()
    {
        // The 13x7 quadrant images are flat colour blocks: a wrong flip or rotation is a ~200 difference.
        foreach (var name in ImageTestData.OrientationImages)
        {
            var golden = NpyTestReader.Read(ImageTestData.File($"decoded/{name}.npy"));
            var image = ImageDecoder.Decode(ImageTestData.File(name));
            Assert.Equal((golden.Shape[1], golden.Shape[0]), (image.Width, image.Height));
            Assert.True(MaxAbsDiff(golden.AsUInt8(), image.Pixels) <= JpegTolerance, name);
        }
    }

    [Fact]
    public void ExifOrientation_Apply_KnownMappings()
    {
        // 2x1 image: pixel A (1,1,1) then B (2,2,2).
        var src = new RgbImage(2, 1, [1, 1, 1, 2, 2, 2]);
        Assert.Equal(new byte[] { 2, 2, 2, 1, 1, 1 }, ExifOrientation.Apply(src, 2).Pixels);
        Assert.Equal(new byte[] { 2, 2, 2, 1, 1, 1 }, ExifOrientation.Apply(src, 3).Pixels);
        Assert.Equal(new byte[] { 1, 1, 1, 2, 2, 2 }, ExifOrientation.Apply(src, 4).Pixels);
        var r6 = ExifOrientation.Apply(src, 6); // clockwise: A on top
        Assert.Equal((1, 2), (r6.Width, r6.Height));
        Assert.Equal(new byte[] { 1, 1, 1, 2, 2, 2 }, r6.Pixels);
        Assert.Equal(new byte[] { 2, 2, 2, 1, 1, 1 }, ExifOrientation.Apply(src, 8).Pixels); // counter-clockwise: B on top
        Assert.Same(src, ExifOrientation.Apply(src, 1));
        Assert.Same(src, ExifOrientation.Apply(src, 0));
    }
}
