using FastMM.Runtime.Images;
using Xunit;

namespace FastMM.Tests.Images;

/// <summary>LlavaProcessor's image-token expansion (processing_llava.py).</summary>
public class Idefics3LlavaPromptTests
{
    [Theory]
    [InlineData(336, 336, 14, "default", 1, 576)]   // llava-1.5 (CLIP ViT-L/14-336 with CLS)
    [InlineData(336, 336, 14, "full", 1, 577)]
    [InlineData(384, 384, 14, "full", 0, 729)]      // llava-interleave (SigLIP, no CLS)
    [InlineData(224, 224, 14, "default", 0, 255)]   // HF's default num_additional_image_tokens is 0
    [InlineData(30, 45, 14, "full", 0, 6)]          // floor division per side
    public void NumImageTokens_MatchesHf(int h, int w, int patch, string strategy, int additional, int expected) =>
        Assert.Equal(expected, LlavaPromptLayout.NumImageTokens(h, w, new LlavaPromptSettings(patch, strategy, additional)));

    [Fact]
    public void Expand_RepeatsEveryPlaceholder()
    {
        Assert.Equal("USER: <image><image><image>\nA<image><image><image> B", LlavaPromptLayout.Expand("USER: <image>\nA<image> B", 3));
        Assert.Equal("x<im><im>", LlavaPromptLayout.Expand("x<im>", 2, "<im>"));
        var settings = new LlavaPromptSettings(14, "default", 1);
        var pv = new PixelValues(new float[2 * 3 * 28 * 42], [2, 3, 28, 42]);
        Assert.Equal("<image><image><image><image><image><image>?", LlavaPromptLayout.Expand("<image>?", pv, settings));
    }

    [Fact]
    public void ProcessorConfig_ReadsAndValidates()
    {
        string dir = Directory.CreateTempSubdirectory("fastmm-llava").FullName;
        string path = Path.Combine(dir, "processor_config.json");
        try
        {
            File.WriteAllText(path, """{"image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": 14, "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "default"}""");
            Assert.Equal(new LlavaPromptSettings(14, "default", 1, "<image>"), LlavaPromptSettings.FromProcessorConfig(path));

            foreach (var (json, field) in new[]
            {
                ("""{"vision_feature_select_strategy": "default"}""", "patch_size"),
                ("""{"patch_size": 14}""", "vision_feature_select_strategy"),
                ("""{"patch_size": 14, "vision_feature_select_strategy": "cls"}""", "vision_feature_select_strategy"),
                ("""{"patch_size": 0, "vision_feature_select_strategy": "full"}""", "patch_size"),
                ("""{"patch_size": 14, "vision_feature_select_strategy": "full", "num_additional_image_tokens": -1}""", "num_additional_image_tokens"),
                ("""{"patch_size": 14, "vision_feature_select_strategy": "full", "image_token": 5}""", "image_token"),
            })
            {
                File.WriteAllText(path, json);
                var e = Assert.Throws<FastMMException>(() => LlavaPromptSettings.FromProcessorConfig(path));
                Assert.Contains(path, e.Message);
                Assert.Contains(field, e.Message);
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
