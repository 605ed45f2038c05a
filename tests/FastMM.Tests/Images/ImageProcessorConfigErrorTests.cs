using FastMM.Runtime.Images;
using Xunit;

namespace FastMM.Tests.Images;

/// <summary>Bad preprocessor configs fail with one FastMMException naming the file and the offending field.</summary>
public class ImageProcessorConfigErrorTests
{
    private const string Name = "models/x/preprocessor_config.json";
    private const string Norm = "\"image_mean\": [0.5, 0.5, 0.5], \"image_std\": [0.5, 0.5, 0.5]";

    private static void AssertFails(string json, string field)
    {
        var e = Assert.Throws<FastMMException>(() => ImageProcessor.FromJson(json, Name));
        Assert.Contains(Name, e.Message);
        Assert.Contains(field, e.Message);
    }

    [Theory]
    [InlineData("""{"image_processor_type": "LlavaNextImageProcessor"}""", "image_processor_type")]
    [InlineData("""{"do_resize": true}""", "image_processor_type")]
    [InlineData("""{"image_processor_type": 3}""", "image_processor_type")]
    [InlineData("""{"image_processor_type": "CLIPImageProcessor", "crop_size": 224, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}""", "'size'")]
    [InlineData("""{"image_processor_type": "CLIPImageProcessor", "size": 224, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}""", "crop_size")]
    [InlineData("""{"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": -4}, "crop_size": 224, "image_mean": 0.5, "image_std": 0.5}""", "size.shortest_edge")]
    [InlineData("""{"image_processor_type": "CLIPImageProcessor", "size": {"width": 4}, "crop_size": 224, "image_mean": 0.5, "image_std": 0.5}""", "'size'")]
    [InlineData("""{"image_processor_type": "CLIPImageProcessor", "size": 224, "crop_size": {"height": 224}, "image_mean": 0.5, "image_std": 0.5}""", "crop_size")]
    [InlineData("""{"image_processor_type": "SiglipImageProcessor", "size": {"height": 224, "width": 224}, "resample": 7}""", "resample")]
    [InlineData("""{"image_processor_type": "SiglipImageProcessor", "size": {"height": 224, "width": 224}, "resample": "bicubic"}""", "resample")]
    [InlineData("""{"image_processor_type": "SiglipImageProcessor", "size": {"height": 224, "width": 224}, "image_mean": [0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}""", "image_mean")]
    [InlineData("""{"image_processor_type": "SiglipImageProcessor", "size": {"height": 224, "width": 224}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0, 0.5]}""", "image_std")]
    [InlineData("""{"image_processor_type": "SiglipImageProcessor", "size": {"height": 224, "width": 224}, "image_std": [0.5, 0.5, 0.5]}""", "image_mean")]
    [InlineData("""{"image_processor_type": "SiglipImageProcessor", "size": {"shortest_edge": 224}, "image_mean": 0.5, "image_std": 0.5}""", "'size'")]
    [InlineData("""{"image_processor_type": "SiglipImageProcessor", "size": {"height": 224, "width": 224}, "do_resize": "yes", "image_mean": 0.5, "image_std": 0.5}""", "do_resize")]
    [InlineData("""{"image_processor_type": "SiglipImageProcessor", "size": {"height": 224, "width": 224}, "rescale_factor": "1/255", "image_mean": 0.5, "image_std": 0.5}""", "rescale_factor")]
    [InlineData("""[1, 2]""", "JSON object")]
    [InlineData("""{"image_processor_type": "CLIPImageProcessor", """, "invalid JSON")]
    public void BadConfig_Throws(string json, string field) => AssertFails(json, field);

    [Fact]
    public void MissingFile_Throws()
    {
        string path = Path.Combine(Path.GetTempPath(), "fastmm-no-such-dir", "preprocessor_config.json");
        var e = Assert.Throws<FastMMException>(() => ImageProcessor.FromConfigFile(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void OptionalFlags_UseHfDefaults()
    {
        var p = ImageProcessor.FromJson($$"""{"image_processor_type": "SiglipImageProcessor", "size": {"height": 8, "width": 6}, {{Norm}}}""", Name);
        Assert.True(p.DoResize && p.DoRescale && p.DoNormalize && p.DoConvertRgb);
        Assert.Equal(ResampleFilter.Bicubic, p.Resample);
        Assert.Equal(1.0 / 255.0, p.RescaleFactor);
        Assert.Equal(new[] { 3, 8, 6 }, p.Preprocess(new RgbImage(5, 5)).Shape);
    }

    [Fact]
    public void NormalizeOff_NeedsNoMeanStd_AndOutputsRescaledValues()
    {
        var p = ImageProcessor.FromJson("""{"image_processor_type": "SiglipImageProcessor", "do_resize": false, "do_normalize": false}""", Name);
        var img = new RgbImage(1, 1, [255, 0, 51]);
        Assert.Equal(new[] { 1f, 0f, 0.2f }, p.Preprocess(img).Data);
    }
}
