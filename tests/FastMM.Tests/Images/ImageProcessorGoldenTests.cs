using System.Text.Json;
using FastMM.Runtime.Images;
using Xunit;
using Xunit.Abstractions;

namespace FastMM.Tests.Images;

/// <summary>pixel_values against tools/make_image_goldens.py (HF CLIP/SigLIP semantics on PIL + numpy).</summary>
public class ImageProcessorGoldenTests(ITestOutputHelper output)
{
    private const float Tolerance = 1e-2f;

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var cfg in ImageTestData.Manifest.GetProperty("configs").EnumerateObject())
            foreach (var img in cfg.Value.EnumerateArray())
                data.Add(cfg.Name, img.GetString()!);
        return data;
    }

    internal static float MaxAbsDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        float max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void PixelValues_MatchGolden(string config, string image)
    {
        var processor = ImageProcessor.FromConfigFile(ImageTestData.ConfigPath(config));
        var golden = NpyTestReader.Read(ImageTestData.File($"pixel_values/{config}/{image}.npy"));
        var actual = processor.Preprocess(ImageTestData.File(image));

        Assert.Equal(golden.Shape, actual.Shape);
        float diff = MaxAbsDiff(golden.AsFloat32(), actual.Data);
        output.WriteLine($"{config} / {image}: shape [{string.Join(", ", actual.Shape)}], max abs diff {diff:G3}");
        Assert.True(diff <= Tolerance, $"max abs diff {diff}");
    }

    [Fact]
    public void Batch_StacksSingleResults()
    {
        var processor = ImageProcessor.FromConfigFile(ImageTestData.ConfigPath("clip_small"));
        var images = new[] { "noise_37x23.png", "tall_17x91.png", "photo_160x120.jpg" }
            .Select(n => ImageDecoder.Decode(ImageTestData.File(n))).ToArray();
        var batch = processor.PreprocessBatch(images);
        Assert.Equal(new[] { 3, 3, 40, 40 }, batch.Shape);
        int per = 3 * 40 * 40;
        for (int i = 0; i < images.Length; i++)
            Assert.Equal(processor.Preprocess(images[i]).Data, batch.Data.AsSpan(i * per, per).ToArray());
    }

    [Fact]
    public void Batch_DifferentOutputSizes_Throws()
    {
        // Shortest-edge resize without a crop keeps the aspect ratio, so these cannot be stacked.
        var processor = ImageProcessor.FromJson("""
            {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 16}, "do_center_crop": false,
             "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
            """, "inline.json");
        var a = new RgbImage(32, 16);
        var b = new RgbImage(16, 32);
        var e = Assert.Throws<FastMMException>(() => processor.PreprocessBatch([a, b]));
        Assert.Contains("inline.json", e.Message);
    }

    [Fact]
    public void Config_ParsesClipFields()
    {
        var p = Assert.IsType<ClipImageProcessor>(ImageProcessor.FromConfigFile(ImageTestData.ConfigPath("clip224")));
        Assert.Equal(SizeSpec.Shortest(224), p.Size);
        Assert.Equal((224, 224), (p.CropHeight, p.CropWidth));
        Assert.Equal(ResampleFilter.Bicubic, p.Resample);
        Assert.Equal(0.48145466f, p.ImageMean[0]);

        var legacy = Assert.IsType<ClipImageProcessor>(ImageProcessor.FromConfigFile(ImageTestData.ConfigPath("clip_small")));
        Assert.Equal("CLIPFeatureExtractor", legacy.ProcessorType);
        Assert.Equal(SizeSpec.Shortest(48), legacy.Size);          // bare int size = shortest edge
        Assert.Equal((40, 40), (legacy.CropHeight, legacy.CropWidth)); // bare int crop = square

        var s = Assert.IsType<SiglipImageProcessor>(ImageProcessor.FromConfigFile(ImageTestData.ConfigPath("siglip_small")));
        Assert.Equal((32, 40), (s.Height, s.Width));
        Assert.Equal(ResampleFilter.Bilinear, s.Resample);
    }

    [Fact]
    public void Config_UseSquareSize_ResizesToSquare()
    {
        var p = Assert.IsType<ClipImageProcessor>(ImageProcessor.FromJson("""
            {"image_processor_type": "CLIPImageProcessor", "size": 20, "use_square_size": true, "do_center_crop": false,
             "image_mean": 0.5, "image_std": 0.5}
            """, "square.json"));
        Assert.Equal(SizeSpec.Exact(20, 20), p.Size);
        Assert.Equal(new[] { 3, 20, 20 }, p.Preprocess(new RgbImage(37, 23)).Shape);
    }

    [Theory]
    [InlineData(200, 300, 224, 224, 336)]
    [InlineData(300, 200, 224, 336, 224)]
    [InlineData(23, 37, 64, 64, 102)]    // 64 * 37 / 23 = 102.95 -> truncated, not rounded
    [InlineData(91, 17, 48, 256, 48)]
    [InlineData(50, 50, 10, 10, 10)]
    public void ShortestEdgeSize_MatchesHf(int h, int w, int edge, int eh, int ew) =>
        Assert.Equal((eh, ew), ImageTransforms.ShortestEdgeSize(h, w, edge));

    [Fact]
    public void CenterCrop_PadsLikeHf()
    {
        // 3 wide x 2 tall image, values = index + 1; crop to 4x5 (h x w): HF pads with zeros, image at (top 1, left 1).
        var px = Enumerable.Range(1, 18).Select(i => (byte)i).ToArray();
        var crop = ImageTransforms.CenterCrop(new RgbImage(3, 2, px), 4, 5);
        Assert.Equal((5, 4), (crop.Width, crop.Height));
        Assert.Equal(0, crop.GetPixel(0, 0)[0]);
        Assert.Equal(px[0], crop.GetPixel(1, 1)[0]);
        Assert.Equal(px[15], crop.GetPixel(3, 2)[0]);
        Assert.Equal(0, crop.GetPixel(4, 3)[0]);
    }
}
