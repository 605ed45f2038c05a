using FastMM.Backends;
using FastMM.Models.IO;
using FastMM.Runtime;
using FastMM.Runtime.Generation;
using FastMM.Runtime.Images;
using FastMM.Tests.Cli;
using FastMM.Tests.Support;

namespace FastMM.Tests.Runtime;

/// <summary>
/// The whole generative path — chat template, image-token expansion, tokenizer, image processor, model, KV-cache
/// generation — against the processor-level goldens of the PyTorch reference, plus the engine's failure modes.
/// </summary>
[Collection("cli")]
public class VlmPipelineTests
{
    private static readonly string Question = "What is shown in this image?";

    private static RgbImage GoldenImage(Dictionary<string, NpyArray> g, int index = 0)
    {
        var a = g["image_uint8"];
        int h = a.Shape[1], w = a.Shape[2];
        var px = a.Ints("image_uint8").Skip(index * h * w * 3).Take(h * w * 3).Select(v => (byte)v).ToArray();
        return new RgbImage(w, h, px);
    }

    private static RgbImage Gray(int w, int h) => new(w, h, Enumerable.Repeat((byte)128, w * h * 3).ToArray());

    [Theory]
    [InlineData("tiny-llava")]
    [InlineData("tiny-llava-f16")]
    [InlineData("tiny-llava-qwen")]
    public void LlavaPromptPixelsAndGreedyAnswerMatchTheReference(string model)
    {
        var g = Npz.Read(TestPaths.Golden(model));
        using var backend = new CpuBackend();
        using var pipe = VlmPipeline.Load(TestPaths.Model(model), backend);
        var conversation = new[] { new ChatTurn("user", Question, [GoldenImage(g)]) };
        var p = pipe.Prepare(conversation);
        Assert.Equal(g["input_ids"].Ints(model).Select(v => (int)v).ToArray(), p.Ids);
        Assert.Equal(16, p.ImageTokens);
        var expectedPx = g["pixel_values"].Floats(model);
        Assert.Equal(expectedPx.Length, p.PixelValues.Length);
        Assert.True(expectedPx.Zip(p.PixelValues, (a, b) => Math.Abs(a - b)).Max() <= 1e-2);

        int newTokens = g["generated_ids"].Shape[1] - p.Ids.Length;
        var r = pipe.Ask(conversation, SamplingOptions.Greedy, newTokens);
        var expected = g["generated_ids"].Ints(model).Skip(p.Ids.Length).Select(v => (int)v).ToArray();
        Assert.Equal(expected, r.TokenIds);
        Assert.Equal(pipe.Tokenizer.Decode(expected), r.Text);
    }

    [Fact]
    public void Idefics3PromptLayoutMatchesTheProcessor()
    {
        var g = Npz.Read(TestPaths.Golden("tiny-idefics3"));
        using var backend = new CpuBackend();
        using var pipe = VlmPipeline.Load(TestPaths.Model("tiny-idefics3"), backend);
        // The golden prompt is one 64x64 image: 2x2 tiles + the global view, 4 image tokens each.
        var p = pipe.Prepare([new ChatTurn("user", Question, [Gray(64, 64)])]);
        Assert.Equal(g["input_ids"].Ints("g").Select(v => (int)v).ToArray(), p.Ids);
        Assert.Equal(20, p.ImageTokens);
        Assert.Equal([5, 3, 32, 32], p.PixelShape);
    }

    [Fact]
    public void PromptOverTheContextWindowIsRefusedWithCounts()
    {
        using var backend = new CpuBackend();
        using var pipe = VlmPipeline.Load(TestPaths.Model("tiny-llava"), backend);
        var e = Assert.Throws<FastMMException>(() => pipe.Ask([new ChatTurn("user", Question, [Gray(40, 30)])], SamplingOptions.Greedy, 250));
        Assert.Contains("16 of them image tokens", e.Message);
        Assert.Contains("context window of 256", e.Message);
        Assert.Equal(pipe.Generator.Cache.CapacityTokens / pipe.Generator.Cache.BlockSize, pipe.Generator.Cache.FreeBlocks); // nothing was allocated
    }

    [Fact]
    public void ImagePlaceholderWithoutAnImageIsAnError()
    {
        using var backend = new CpuBackend();
        using var pipe = VlmPipeline.Load(TestPaths.Model("tiny-llava"), backend);
        var e = Assert.Throws<FastMMException>(() => pipe.Prepare([new ChatTurn("user", "<image>\nWhat is this?")]));
        Assert.Contains("1 image placeholder(s) '<image>' but 0 image(s)", e.Message);
    }

    [Fact]
    public void MaxNewTokensZeroGeneratesNothing()
    {
        using var backend = new CpuBackend();
        using var pipe = VlmPipeline.Load(TestPaths.Model("tiny-llava"), backend);
        var r = pipe.Ask([new ChatTurn("user", "Hello")], SamplingOptions.Greedy, 0);
        Assert.Empty(r.TokenIds);
        Assert.Equal("", r.Text);
    }

    [Fact]
    public async Task CancellingMidStreamStopsAndLeavesThePipelineUsable()
    {
        using var backend = new CpuBackend();
        using var pipe = VlmPipeline.Load(TestPaths.Model("tiny-llava"), backend);
        var conversation = new[] { new ChatTurn("user", Question, [Gray(32, 32)]) };
        var full = pipe.Ask(conversation, SamplingOptions.Greedy, 20);
        using var cts = new CancellationTokenSource();
        int chunks = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in pipe.StreamAsync(conversation, SamplingOptions.Greedy, 20, ct: cts.Token))
                if (++chunks == 3) cts.Cancel();
        });
        Assert.True(chunks < 20);
        Assert.Equal(pipe.Generator.Cache.CapacityTokens / pipe.Generator.Cache.BlockSize, pipe.Generator.Cache.FreeBlocks); // blocks returned
        Assert.Equal(full.TokenIds, pipe.Ask(conversation, SamplingOptions.Greedy, 20).TokenIds);
    }

    [Fact]
    public void StopStringCutsTheAnswer()
    {
        using var backend = new CpuBackend();
        using var pipe = VlmPipeline.Load(TestPaths.Model("tiny-llava"), backend);
        var conversation = new[] { new ChatTurn("user", Question, [Gray(32, 32)]) };
        var full = pipe.Ask(conversation, SamplingOptions.Greedy, 16);
        Assert.True(full.Text.Length > 6, full.Text);
        string stop = full.Text.Substring(3, 3);
        int at = full.Text.IndexOf(stop, StringComparison.Ordinal);
        var chunks = new List<string>();
        var cut = pipe.Ask(conversation, SamplingOptions.Greedy, 16, [stop], c => chunks.Add(c.Text));
        Assert.Equal(FinishReason.StopString, cut.Reason);
        Assert.Equal(full.Text[..at], cut.Text);
        Assert.Equal(cut.Text, string.Concat(chunks)); // nothing of the stop string was streamed
    }

    [Fact]
    public async Task ConcurrentConversationsGiveTheSameAnswersAsSequential()
    {
        using var backend = new CpuBackend();
        using var pipe = VlmPipeline.Load(TestPaths.Model("tiny-llava-qwen"), backend, cacheTokens: 1024);
        var convs = new[] { "What is this?", "Describe the picture.", "Any text?" }
            .Select((q, i) => new[] { new ChatTurn("user", q, [Gray(32 + 8 * i, 32)]) }).ToArray();
        var sequential = convs.Select(c => pipe.Ask(c, SamplingOptions.Greedy, 10).TokenIds).ToArray();
        var parallel = await Task.WhenAll(convs.Select(c => Task.Run(() => pipe.Ask(c, SamplingOptions.Greedy, 10).TokenIds)));
        for (int i = 0; i < convs.Length; i++) Assert.Equal(sequential[i], parallel[i]);
    }

    [Fact]
    public void SeededSamplingIsReproducible()
    {
        using var backend = new CpuBackend();
        using var pipe = VlmPipeline.Load(TestPaths.Model("tiny-idefics3"), backend);
        var conv = new[] { new ChatTurn("user", Question, [Gray(50, 40)]) };
        var o = new SamplingOptions { Temperature = 0.9f, TopP = 0.95f, TopK = 50, Seed = 7 };
        var a = pipe.Ask(conv, o, 12).TokenIds;
        var b = pipe.Ask(conv, o, 12).TokenIds;
        Assert.Equal(a, b);
        Assert.NotEqual(a, pipe.Ask(conv, o with { Seed = 8 }, 12).TokenIds);
    }

    [Fact]
    public void AFullKvPoolFailsBeforeAnyTokenIsStreamed()
    {
        using var backend = new CpuBackend();
        using var pipe = VlmPipeline.Load(TestPaths.Model("tiny-llava"), backend, cacheTokens: 48);
        var chunks = new List<string>();
        var e = Assert.Throws<FastMMException>(() => pipe.Ask([new ChatTurn("user", Question, [Gray(32, 32)])], SamplingOptions.Greedy, 30, onChunk: c => chunks.Add(c.Text)));
        Assert.Contains("KV cache is full", e.Message);
        Assert.Empty(chunks);
        Assert.Equal(3, pipe.Generator.Cache.FreeBlocks); // 48 tokens = 3 blocks of 16, all returned
    }

    [Fact]
    public void GenerationConfigSamplingDefaultsAreRead()
    {
        using var tmp = new TestPaths.TempDir();
        foreach (var f in Directory.GetFiles(TestPaths.Model("tiny-llava"))) File.Copy(f, tmp[Path.GetFileName(f)]);
        File.WriteAllText(tmp["generation_config.json"], """{"eos_token_id": [2, 7], "do_sample": true, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.3}""");
        using var backend = new CpuBackend();
        using (var pipe = VlmPipeline.Load(tmp.Path, backend))
        {
            Assert.Equal([2, 7], pipe.EosTokenIds);
            Assert.Equal(2, pipe.PadTokenId); // no pad_token_id: HF generate() pads with eos[0]
            Assert.Equal(new SamplingOptions { Temperature = 0.7f, TopK = 50, TopP = 0.9f, RepetitionPenalty = 1.3f }, pipe.DefaultSampling);
        }
        File.WriteAllText(tmp["generation_config.json"], """{"eos_token_id": 2.5}""");
        var e = Assert.Throws<FastMMException>(() => VlmPipeline.Load(tmp.Path, backend));
        Assert.Contains("generation_config.json: eos_token_id must be an integer", e.Message);
    }

    [Fact]
    public void NonRectangularPixelMaskIsRejected()
    {
        using var backend = new CpuBackend();
        using var m = FastMM.Models.ModelLoader.LoadVisionLanguageModel(TestPaths.Model("tiny-idefics3"), backend);
        using var px = backend.FromHost(new float[3 * 32 * 32], 1, 3, 32, 32);
        var mask = new bool[32 * 32];
        mask[0] = true; mask[9 * 32 + 9] = true; // real pixels in patches (0,0) and (1,1) only: not a top-left block
        var e = Assert.Throws<FastMMException>(() => m.ImageFeatures(px, mask));
        Assert.Contains("top-left rectangle", e.Message);
    }

    // ---- CLI ----

    [Fact]
    public void GenerateCommandMatchesHfGenerate()
    {
        using var tmp = new TestPaths.TempDir();
        var g = Npz.Read(TestPaths.Golden("tiny-idefics3"));
        Npz.Write(tmp["in.npz"], [g["input_ids"], g["attention_mask"], g["pixel_values"], g["pixel_attention_mask"]]);
        int newTokens = g["generated_ids"].Shape[1] - g["input_ids"].Shape[1];
        var (code, _, err) = CliTests.Run("generate", "--model", TestPaths.Model("tiny-idefics3"), "--inputs", tmp["in.npz"],
            "--max-new-tokens", newTokens.ToString(), "--greedy", "--out", tmp["out.npz"]);
        Assert.True(code == 0, err);
        Assert.Equal(g["generated_ids"].Ints("g"), Npz.Read(tmp["out.npz"])["generated_ids"].Ints("o"));
    }

    [Fact]
    public void ForwardCommandWritesLogitsForVlms()
    {
        using var tmp = new TestPaths.TempDir();
        var g = Npz.Read(TestPaths.Golden("tiny-llava-qwen.batch"));
        Npz.Write(tmp["in.npz"], [g["input_ids"], g["attention_mask"], g["pixel_values"], g["position_ids"]]);
        var (code, _, err) = CliTests.Run("forward", "--model", TestPaths.Model("tiny-llava-qwen"), "--inputs", tmp["in.npz"], "--out", tmp["out.npz"]);
        Assert.True(code == 0, err);
        var logits = Npz.Read(tmp["out.npz"])["logits"];
        Assert.Equal(g["logits"].Shape, logits.Shape);
        Compare.Close("forward logits", logits.Floats("o"), g["logits"].Floats("g"), 1e-4);
    }

    [Fact]
    public void AskStreamsAnAnswerAndBatchReportsBadLines()
    {
        string img = Path.Combine(AppContext.BaseDirectory, "samples", "a-red-circle.png");
        var (code, output, err) = CliTests.Run("ask", "--model", TestPaths.Model("tiny-llava"), "--image", img, "What color is the circle?", "--max-new-tokens", "5");
        Assert.True(code == 0, err);
        Assert.Contains("5 generated", err);
        Assert.NotEqual("", output.Trim());

        using var tmp = new TestPaths.TempDir();
        File.WriteAllLines(tmp["in.jsonl"],
        [
            $$"""{"id": 1, "image": "{{img}}", "question": "What color?"}""",
            $$"""{"id": 2, "image": ["{{img}}", "{{img}}"], "question": "Same?"}""",
            """{"id": 3, "image": "nope.png", "question": "?"}""",
        ]);
        (code, _, err) = CliTests.Run("ask", "--model", TestPaths.Model("tiny-llava"), "--batch", tmp["in.jsonl"], "--out", tmp["out.jsonl"], "--max-new-tokens", "4");
        Assert.Equal(1, code);
        var lines = File.ReadAllLines(tmp["out.jsonl"]);
        Assert.Equal(3, lines.Length);
        Assert.Contains("\"answer\"", lines[0]);
        Assert.Contains("\"answer\"", lines[1]);
        Assert.Contains("\"error\"", lines[2]);
        Assert.Contains("nope.png", err);
    }

    [Fact]
    public void AskWithAnInt8KvCacheAnswersAndSaysSo()
    {
        string img = Path.Combine(AppContext.BaseDirectory, "samples", "a-red-circle.png");
        var (code, output, err) = CliTests.Run("ask", "--model", TestPaths.Model("tiny-llava"), "--image", img, "What color is the circle?",
            "--max-new-tokens", "5", "--kv-cache", "int8");
        Assert.True(code == 0, err);
        Assert.Contains("5 generated", err);
        Assert.Contains("int8 KV cache", err);
        Assert.NotEqual("", output.Trim());

        (code, output, err) = CliTests.Run("ask", "--model", TestPaths.Model("tiny-llava"), "Hi", "--kv-cache", "int4");
        Assert.Equal(1, code);
        Assert.Equal("", output);
        Assert.Contains("--kv-cache must be f32 or int8, got 'int4'", err);
    }

    [Fact]
    public void AskWithACorruptImageIsOneError()
    {
        using var tmp = new TestPaths.TempDir();
        File.WriteAllText(tmp["bad.jpg"], "not an image");
        var (code, output, err) = CliTests.Run("ask", "--model", TestPaths.Model("tiny-idefics3"), "--image", tmp["bad.jpg"], "What?");
        Assert.Equal(1, code);
        Assert.Equal("", output);
        Assert.StartsWith("error:", err.Trim());
        Assert.Contains("bad.jpg", err);
    }

    [Fact]
    public void ChatKeepsHistoryAndAttachesImages()
    {
        string img = Path.Combine(AppContext.BaseDirectory, "samples", "a-blue-circle.png");
        var o = new StringWriter(); var e = new StringWriter();
        var input = new StringReader($"/image {img}\nWhat shape?\nAnd the color?\n/image /nonexistent.png\n/exit\n");
        int code = FastMM.Cli.Program.Run(["chat", "--model", TestPaths.Model("tiny-llava-qwen"), "--max-new-tokens", "3"], o, e, input);
        Assert.Equal(0, code);
        Assert.Contains("image attached", e.ToString());
        Assert.Contains("error:", e.ToString()); // the missing image is reported, the chat goes on
        Assert.Equal(6, o.ToString().Split("> ").Length); // one prompt per input line, five lines read
    }

    [Fact]
    public void TokensCommandCountsTextAndImageTokens()
    {
        string img = Path.Combine(AppContext.BaseDirectory, "samples", "a-red-circle.png");
        var (code, output, err) = CliTests.Run("tokens", "--model", TestPaths.Model("tiny-llava"), "--image", img, "--image", img, "Compare them.");
        Assert.True(code == 0, err);
        Assert.Contains("image_tokens   32 (2 image(s))", output);
    }

    [Fact]
    public void DualEncoderIsRefusedByGenerativeCommands()
    {
        var (code, _, err) = CliTests.Run("ask", "--model", TestPaths.Model("tiny-clip"), "Hi");
        Assert.Equal(1, code);
        Assert.Contains("is a dual encoder", err);
    }
}
