using System.Text.Json;
using FastMM.Runtime.Images;
using Xunit;
using Xunit.Abstractions;

namespace FastMM.Tests.Images;

public class PilResamplerTests(ITestOutputHelper output)
{
    private static readonly JsonElement Manifest =
        JsonDocument.Parse(File.ReadAllText(ImageTestData.File("resize/manifest.json"))).RootElement;

    public static TheoryData<string, int> Cases()
    {
        var data = new TheoryData<string, int>();
        foreach (var src in Manifest.GetProperty("sources").EnumerateObject())
            foreach (var f in Manifest.GetProperty("filters").EnumerateArray())
                data.Add(src.Name, f.GetInt32());
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Resize_IsBitExactWithPillow(string source, int filter)
    {
        var srcNpy = NpyTestReader.Read(ImageTestData.File($"resize/{source}.npy"));
        var image = new RgbImage(srcNpy.Shape[1], srcNpy.Shape[0], srcNpy.AsUInt8());
        byte[] expectedAll = NpyTestReader.Read(ImageTestData.File($"resize/{source}_f{filter}.npy")).AsUInt8();

        int offset = 0, failures = 0;
        foreach (var size in Manifest.GetProperty("sources").GetProperty(source).EnumerateArray())
        {
            int w = size[0].GetInt32(), h = size[1].GetInt32();
            var actual = PilResampler.Resize(image, w, h, (ResampleFilter)filter);
            Assert.Equal((w, h), (actual.Width, actual.Height));
            var expected = expectedAll.AsSpan(offset, w * h * 3);
            offset += w * h * 3;

            int mismatches = 0, maxDiff = 0;
            for (int i = 0; i < expected.Length; i++)
            {
                int d = Math.Abs(expected[i] - actual.Pixels[i]);
                if (d != 0) { mismatches++; maxDiff = Math.Max(maxDiff, d); }
            }
            if (mismatches > 0)
            {
                failures++;
                output.WriteLine($"{source} -> {w}x{h} filter {(ResampleFilter)filter}: {mismatches} bytes differ, max {maxDiff}");
            }
        }
        Assert.Equal(expectedAll.Length, offset);
        Assert.Equal(0, failures);
    }

    [Fact]
    public void Resize_SameSize_ReturnsEqualCopy()
    {
        var img = new RgbImage(3, 2, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]);
        var copy = PilResampler.Resize(img, 3, 2, ResampleFilter.Bicubic);
        Assert.NotSame(img.Pixels, copy.Pixels);
        Assert.Equal(img.Pixels, copy.Pixels);
    }

    [Fact]
    public void Resize_FlatImage_StaysFlat()
    {
        // Normalized weights sum to 1 in fixed point (up to rounding), so a constant image must stay constant.
        var img = new RgbImage(31, 17);
        img.Pixels.AsSpan().Fill(200);
        foreach (var f in Enum.GetValues<ResampleFilter>())
            Assert.All(PilResampler.Resize(img, 11, 40, f).Pixels, b => Assert.Equal(200, b));
    }

    [Fact]
    public void Resize_BadTarget_Throws()
    {
        var img = new RgbImage(4, 4);
        Assert.Throws<FastMMException>(() => PilResampler.Resize(img, 0, 4, ResampleFilter.Bilinear));
    }
}
