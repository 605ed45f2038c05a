using System.Security.Cryptography;
using System.Text.Json;
using FastMM.Runtime.Images;
using Xunit;
using Xunit.Abstractions;

namespace FastMM.Tests.Images;

/// <summary>Idefics3/SmolVLM preprocessing and prompt layout against tools/make_idefics3_goldens.py.</summary>
public class Idefics3ImageProcessorTests(ITestOutputHelper output)
{
    private const float Tolerance = 1e-2f;
    private static string Dir => Path.Combine(ImageTestData.Dir, "idefics3");
    private static JsonElement Manifest { get; } = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "manifest.json"))).RootElement;

    private static Idefics3ImageProcessor Load(string config) => Assert.IsType<Idefics3ImageProcessor>(
        ImageProcessor.FromConfigFile(Path.Combine(Dir, "configs", config, "preprocessor_config.json")));

    private static RgbImage Image(string name) => ImageDecoder.Decode(Path.Combine(Dir, name + ".png"));

    private static JsonElement Entry(string config, string image) =>
        Manifest.GetProperty("configs").GetProperty(config).GetProperty("images").GetProperty(image);

    private static (int, int) Grid(JsonElement e) => (e[0].GetInt32(), e[1].GetInt32());

    public static TheoryData<string, string> GoldenCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var cfg in Manifest.GetProperty("configs").EnumerateObject())
            foreach (var img in cfg.Value.GetProperty("images").EnumerateObject())
                if (!img.Value.TryGetProperty("checksum", out _))
                    data.Add(cfg.Name, img.Name);
        return data;
    }

    [Theory]
    [MemberData(nameof(GoldenCases))]
    public void SingleImage_MatchesGolden(string config, string image)
    {
        var entry = Entry(config, image);
        var golden = NpyTestReader.Read(Path.Combine(Dir, "pixel_values", config, image + ".npy"));
        var goldenMask = NpyTestReader.Read(Path.Combine(Dir, "pixel_values", config, image + ".mask.npy")).AsUInt8();

        var result = Load(config).Process([Image(image)]);

        Assert.Equal(Grid(entry.GetProperty("grid")), result.Grids.Single());
        Assert.Equal(golden.Shape, result.PixelValues.Shape);
        Assert.Equal(golden.Shape.Where((_, i) => i != 1), result.MaskShape);
        Assert.Equal(goldenMask.Select(b => b != 0), result.PixelAttentionMask);
        float diff = ImageProcessorGoldenTests.MaxAbsDiff(golden.AsFloat32(), result.PixelValues.Data);
        output.WriteLine($"{config} / {image}: grid {result.Grids[0]}, shape [{string.Join(", ", result.PixelValues.Shape)}], max abs diff {diff:G3}");
        Assert.True(diff <= Tolerance, $"max abs diff {diff}");
    }

    [Fact]
    public void FullSizeSmolVlm_MatchesChecksum()
    {
        var entry = Entry("smolvlm_256m", "wide_100x60");
        var sum = entry.GetProperty("checksum");
        var result = Load("smolvlm_256m").Process([Image("wide_100x60")]);

        Assert.Equal(Grid(entry.GetProperty("grid")), result.Grids.Single());
        Assert.Equal(entry.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()), result.PixelValues.Shape);
        Assert.All(result.PixelAttentionMask, Assert.True);

        float[] data = result.PixelValues.Data;
        int stride = sum.GetProperty("sample_stride").GetInt32();
        float[] samples = sum.GetProperty("samples").EnumerateArray().Select(e => (float)e.GetDouble()).ToArray();
        float[] ours = Enumerable.Range(0, samples.Length).Select(i => data[i * stride]).ToArray();
        float sampleDiff = ImageProcessorGoldenTests.MaxAbsDiff(samples, ours);
        int frame = data.Length / result.PixelValues.Shape[0];
        double[] sums = sum.GetProperty("frame_sums").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        double sumDiff = sums.Select((s, f) => Math.Abs(s - data.AsSpan(f * frame, frame).ToArray().Sum(v => (double)v))).Max();
        string sha = Convert.ToHexStringLower(SHA256.HashData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan())));
        output.WriteLine($"smolvlm_256m: sampled max abs diff {sampleDiff:G3}, frame-sum max diff {sumDiff:G3}, sha256 equal: {sha == sum.GetProperty("sha256").GetString()}");

        Assert.True(sampleDiff <= Tolerance, $"sampled max abs diff {sampleDiff}");
        Assert.True(sumDiff <= 1.0, $"frame sum diff {sumDiff}");
        Assert.Equal(sum.GetProperty("sha256").GetString(), sha);
    }

    public static TheoryData<string> BatchConfigs()
    {
        var data = new TheoryData<string>();
        foreach (var b in Manifest.GetProperty("batch").EnumerateObject()) data.Add(b.Name);
        return data;
    }

    [Theory]
    [MemberData(nameof(BatchConfigs))]
    public void Batch_PadsFramesAndImageCounts(string config)
    {
        var spec = Manifest.GetProperty("batch").GetProperty(config);
        var prompts = spec.GetProperty("samples").EnumerateArray()
            .Select(s => (IReadOnlyList<RgbImage>)s.EnumerateArray().Select(n => Image(n.GetString()!)).ToArray()).ToArray();
        var golden = NpyTestReader.Read(Path.Combine(Dir, "batch", config + ".npy"));
        var goldenMask = NpyTestReader.Read(Path.Combine(Dir, "batch", config + ".mask.npy")).AsUInt8();

        var batch = Load(config).ProcessBatch(prompts);

        Assert.Equal(golden.Shape, batch.PixelValues.Shape);
        Assert.Equal(goldenMask.Select(b => b != 0), batch.PixelAttentionMask);
        float diff = ImageProcessorGoldenTests.MaxAbsDiff(golden.AsFloat32(), batch.PixelValues.Data);
        output.WriteLine($"batch {config}: shape [{string.Join(", ", batch.PixelValues.Shape)}], max abs diff {diff:G3}");
        Assert.True(diff <= Tolerance, $"max abs diff {diff}");

        var rows = spec.GetProperty("rows").EnumerateArray().ToArray();
        var cols = spec.GetProperty("cols").EnumerateArray().ToArray();
        var texts = spec.GetProperty("texts").EnumerateArray().Select(t => t.GetString()!).ToArray();
        var expected = spec.GetProperty("prompts").EnumerateArray().Select(t => t.GetString()!).ToArray();
        int seqLen = Manifest.GetProperty("configs").GetProperty(config).GetProperty("image_seq_len").GetInt32();
        for (int i = 0; i < prompts.Length; i++)
        {
            var grids = rows[i].EnumerateArray().Zip(cols[i].EnumerateArray(), (r, c) => (r.GetInt32(), c.GetInt32())).ToArray();
            Assert.Equal(grids, batch.Grids[i]);
            Assert.Equal(expected[i], Idefics3PromptLayout.Expand(texts[i], batch.Grids[i], seqLen));
        }
        // Padding frames after each prompt's real ones are all zero with a false mask.
        int frame = 3 * batch.Height * batch.Width;
        for (int i = 0; i < prompts.Length; i++)
            for (int j = batch.FrameCounts[i]; j < batch.MaxFrames; j++)
                Assert.All(batch.PixelValues.Data.AsSpan((i * batch.MaxFrames + j) * frame, frame).ToArray(), v => Assert.Equal(0f, v));
    }

    [Theory]
    [MemberData(nameof(GoldenCases))]
    public void Prompt_MatchesGolden(string config, string image)
    {
        var entry = Entry(config, image);
        int seqLen = Manifest.GetProperty("configs").GetProperty(config).GetProperty("image_seq_len").GetInt32();
        var grid = Grid(entry.GetProperty("grid"));
        Assert.Equal(entry.GetProperty("prompt").GetString(), Idefics3PromptLayout.Expand(entry.GetProperty("text").GetString()!, [grid], seqLen));
    }

    [Fact]
    public void Prompt_ExactLayouts()
    {
        Assert.Equal("<fake_token_around_image><global-img><image><image><fake_token_around_image>",
            Idefics3PromptLayout.ImagePrompt(0, 0, 2));
        Assert.Equal(
            "<fake_token_around_image><row_1_col_1><image><fake_token_around_image><row_1_col_2><image>\n" +
            "<fake_token_around_image><row_2_col_1><image><fake_token_around_image><row_2_col_2><image>\n" +
            "\n<fake_token_around_image><global-img><image><fake_token_around_image>",
            Idefics3PromptLayout.ImagePrompt(2, 2, 1));
        var custom = new Idefics3PromptTokens("<F>", "<I>", "<G>");
        Assert.Equal("a<F><row_1_col_1><I><I>\n\n<F><G><I><I><F>b<F><G><I><I><F>",
            Idefics3PromptLayout.Expand("a<I>b<I>", [(1, 1), (0, 0)], 2, custom));
        Assert.Equal("no images", Idefics3PromptLayout.Expand("no images", [], 64));
    }

    [Fact]
    public void Prompt_CountMismatch_Throws()
    {
        var e = Assert.Throws<FastMMException>(() => Idefics3PromptLayout.Expand("<image><image>", [(1, 2)], 4));
        Assert.Contains("2", e.Message);
        Assert.Throws<FastMMException>(() => Idefics3PromptLayout.Expand("text", [(0, 0)], 4));
    }

    [Fact]
    public void ImageSeqLen_ComputedAndFromProcessorConfig()
    {
        Assert.Equal(64, Idefics3PromptLayout.ImageSeqLen(512, 16, 4));   // SmolVLM-256M
        Assert.Equal(169, Idefics3PromptLayout.ImageSeqLen(364, 14, 2));  // Idefics3-8B
        string dir = Directory.CreateTempSubdirectory("fastmm-idefics3").FullName;
        try
        {
            string path = Path.Combine(dir, "processor_config.json");
            File.WriteAllText(path, """{"image_seq_len": 64, "processor_class": "Idefics3Processor"}""");
            Assert.Equal(64, Idefics3PromptLayout.ImageSeqLenFromProcessorConfig(path));
            File.WriteAllText(path, """{"processor_class": "Idefics3Processor"}""");
            Assert.Equal(169, Idefics3PromptLayout.ImageSeqLenFromProcessorConfig(path));
            File.WriteAllText(path, """{"image_seq_len": "64"}""");
            var e = Assert.Throws<FastMMException>(() => Idefics3PromptLayout.ImageSeqLenFromProcessorConfig(path));
            Assert.Contains(path, e.Message);
            Assert.Contains("image_seq_len", e.Message);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Theory]
    [InlineData(60, 100, 64, 38, 64)]       // 64 / (100/60) = 38.4 -> 38
    [InlineData(100, 60, 64, 64, 38)]
    [InlineData(33, 33, 64, 64, 64)]
    [InlineData(90, 20, 64, 64, 14)]        // 64 * 20/90 = 14.2 -> 14, even already
    [InlineData(149, 150, 45, 44, 45)]      // 45 / (150/149) = 44.7 -> 44 (even, kept)
    [InlineData(33, 33, 45, 46, 45)]        // odd longest edge: 45 -> 46 on the other side (HF's evenness bump)
    [InlineData(1, 5000, 2048, 1, 2048)]      // 0 is even, so no bump; then clamped to 1
    [InlineData(100, 60, 5000, 4096, 2457)] // 5000x3000, then capped at 4096
    public void LongestEdgeSize_MatchesHf(int h, int w, int edge, int eh, int ew)
    {
        var (ph, pw) = PythonLongestEdge(h, w, edge);
        Assert.Equal((ph, pw), Idefics3ImageProcessor.LongestEdgeSize(h, w, edge));
        Assert.Equal((eh, ew), (ph, pw));
    }

    // The reference arithmetic written out independently (same as the golden script), to check the inline expectations.
    private static (int, int) PythonLongestEdge(int h, int w, int edge)
    {
        double a = (double)w / h;
        int nh, nw;
        if (w >= h) { nw = edge; nh = (int)(nw / a); if (nh % 2 != 0) nh++; }
        else { nh = edge; nw = (int)(nh * a); if (nw % 2 != 0) nw++; }
        (nh, nw) = (Math.Max(nh, 1), Math.Max(nw, 1));
        a = (double)nw / nh;
        if (nw >= nh && nw > 4096) { nw = 4096; nh = (int)(nw / a); }
        else if (nh > nw && nh > 4096) { nh = 4096; nw = (int)(nh * a); }
        return (Math.Max(nh, 1), Math.Max(nw, 1));
    }

    [Theory]
    [InlineData(38, 64, 32, 64, 64)]
    [InlineData(64, 38, 32, 64, 64)]
    [InlineData(1228, 2048, 512, 1536, 2048)]
    [InlineData(60, 100, 32, 96, 128)]       // 128 / (100/60) = 76.8 -> 76 -> up to 96
    [InlineData(5, 7, 32, 32, 32)]
    public void VisionEncoderSize_MatchesHf(int h, int w, int tile, int eh, int ew)
    {
        double a = (double)w / h;
        int rh, rw;
        if (w >= h) { rw = (int)Math.Ceiling((double)w / tile) * tile; rh = (int)Math.Ceiling((int)(rw / a) / (double)tile) * tile; }
        else { rh = (int)Math.Ceiling((double)h / tile) * tile; rw = (int)Math.Ceiling((int)(rh * a) / (double)tile) * tile; }
        Assert.Equal((rh, rw), Idefics3ImageProcessor.VisionEncoderSize(h, w, tile));
        Assert.Equal((eh, ew), (rh, rw));
    }

    [Fact]
    public void Config_ParsesFieldsAndDefaults()
    {
        var p = Load("small_split");
        Assert.Equal("Idefics3ImageProcessor", p.ProcessorType);
        Assert.Equal((64, 32, true, true), (p.LongestEdge, p.TileSize, p.DoImageSplitting, p.DoPad));
        Assert.Equal(ResampleFilter.Lanczos, p.Resample);
        Assert.Equal("SmolVLMImageProcessor", Load("odd_bicubic").ProcessorType);
        Assert.Equal(ResampleFilter.Bicubic, Load("odd_bicubic").Resample);

        // HF defaults: longest edge 4 * 364, tiles of 364, LANCZOS, splitting and padding on.
        var d = Assert.IsType<Idefics3ImageProcessor>(ImageProcessor.FromJson(
            """{"image_processor_type": "Idefics3ImageProcessor", "image_mean": 0.5, "image_std": 0.5}""", "d.json"));
        Assert.Equal((1456, 364, ResampleFilter.Lanczos, true, true), (d.LongestEdge, d.TileSize, d.Resample, d.DoImageSplitting, d.DoPad));

        var hw = Assert.IsType<Idefics3ImageProcessor>(ImageProcessor.FromJson(
            """{"image_processor_type": "Idefics3ImageProcessor", "size": {"height": 40, "width": 50}, "max_image_size": {"longest_edge": 16}, "image_mean": 0.5, "image_std": 0.5}""", "hw.json"));
        Assert.Equal((0, 40, 50), (hw.LongestEdge, hw.ResizeHeight, hw.ResizeWidth));
        var r = hw.Process([new RgbImage(7, 9)]);
        Assert.Equal((4, 4), r.Grids[0]);   // 40x50 -> width 64, height int(64 / 1.25) = 51 -> 64: 4 x 4 tiles
        Assert.Equal(new[] { 17, 3, 16, 16 }, r.PixelValues.Shape);
    }

    [Fact]
    public void Preprocess_WithoutSplitting_IsTheSingleFrame_WithSplitting_Throws()
    {
        var img = Image("wide_100x60");
        var nosplit = Load("small_nosplit");
        Assert.Equal(nosplit.Process([img]).PixelValues.Data, nosplit.Preprocess(img).Data);
        var e = Assert.Throws<FastMMException>(() => Load("small_split").Preprocess(img));
        Assert.Contains("do_image_splitting", e.Message);
    }

    [Fact]
    public void EmptyBatch_Throws() =>
        Assert.Throws<FastMMException>(() => Load("small_split").ProcessBatch([[], []]));

    private const string Name = "models/smol/preprocessor_config.json";

    [Theory]
    [InlineData("""{"image_processor_type": "Idefics3ImageProcessor", "size": {"longest_edge": 0}, "image_mean": 0.5, "image_std": 0.5}""", "size.longest_edge")]
    [InlineData("""{"image_processor_type": "Idefics3ImageProcessor", "size": {"shortest_edge": 64}, "image_mean": 0.5, "image_std": 0.5}""", "'size'")]
    [InlineData("""{"image_processor_type": "Idefics3ImageProcessor", "size": 64, "image_mean": 0.5, "image_std": 0.5}""", "'size'")]
    [InlineData("""{"image_processor_type": "Idefics3ImageProcessor", "size": {"height": 64, "width": "x"}, "image_mean": 0.5, "image_std": 0.5}""", "size.width")]
    [InlineData("""{"image_processor_type": "Idefics3ImageProcessor", "max_image_size": 512, "image_mean": 0.5, "image_std": 0.5}""", "max_image_size")]
    [InlineData("""{"image_processor_type": "Idefics3ImageProcessor", "max_image_size": {"longest_edge": -1}, "image_mean": 0.5, "image_std": 0.5}""", "max_image_size.longest_edge")]
    [InlineData("""{"image_processor_type": "SmolVLMImageProcessor", "max_image_size": {"height": 512}, "image_mean": 0.5, "image_std": 0.5}""", "max_image_size")]
    [InlineData("""{"image_processor_type": "Idefics3ImageProcessor", "do_image_splitting": "yes", "image_mean": 0.5, "image_std": 0.5}""", "do_image_splitting")]
    [InlineData("""{"image_processor_type": "Idefics3ImageProcessor", "do_pad": 1, "image_mean": 0.5, "image_std": 0.5}""", "do_pad")]
    [InlineData("""{"image_processor_type": "Idefics3ImageProcessor", "resample": 9, "image_mean": 0.5, "image_std": 0.5}""", "resample")]
    [InlineData("""{"image_processor_type": "Idefics3ImageProcessor", "image_std": 0.5}""", "image_mean")]
    public void BadConfig_Throws(string json, string field)
    {
        var e = Assert.Throws<FastMMException>(() => ImageProcessor.FromJson(json, Name));
        Assert.Contains(Name, e.Message);
        Assert.Contains(field, e.Message);
    }
}
