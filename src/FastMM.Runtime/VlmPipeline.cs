using System.Text.Json;
using FastMM.Kv;
using FastMM.Models;
using FastMM.Runtime.Generation;
using FastMM.Runtime.Images;
using FastMM.Runtime.Templates;
using FastMM.Runtime.Tokenizers;

namespace FastMM.Runtime;

/// <summary>One conversation turn: a role, its text, and the images attached to it (shown before the text).</summary>
public sealed record ChatTurn(string Role, string Text, IReadOnlyList<RgbImage>? Images = null);

/// <summary>A rendered, tokenised prompt with its images preprocessed, ready to generate from.</summary>
public sealed record PreparedPrompt(int[] Ids, int ImageTokens, int Images, float[] PixelValues, int[] PixelShape, bool[] PixelAttentionMask, string Text);

/// <summary>
/// A generative VLM loaded with its folder's tokenizer, chat template, image processor and generation config:
/// conversations with images in, streamed text out — what HF's processor + generate() do. Load once and share:
/// Ask/Stream are safe to call from several threads (each call has its own KV sequence).
/// </summary>
public sealed class VlmPipeline : IDisposable
{
    public VisionLanguageModel Model { get; }
    public Tokenizer Tokenizer { get; }
    public ChatTemplate Template { get; }
    public ImageProcessor Images { get; }
    public IReadOnlyList<int> EosTokenIds { get; }
    public int PadTokenId { get; }
    /// <summary>generation_config.json's sampling defaults (do_sample, temperature, top_k, top_p, min_p, repetition_penalty), as HF generate() applies them.</summary>
    public SamplingOptions DefaultSampling { get; }
    public Generator Generator { get; }
    private readonly LlavaPromptSettings? _llava;
    private readonly int _imageSeqLen;
    private readonly string _imageToken;

    private VlmPipeline(VisionLanguageModel model, Tokenizer tokenizer, ChatTemplate template, ImageProcessor images,
        GenerationConfig gc, LlavaPromptSettings? llava, int imageSeqLen, int? cacheTokens, KvCacheType kvCache)
    {
        Model = model; Tokenizer = tokenizer; Template = template; Images = images; EosTokenIds = gc.Eos; PadTokenId = gc.Pad;
        DefaultSampling = gc.Sampling;
        _llava = llava; _imageSeqLen = imageSeqLen; _imageToken = llava?.ImageToken ?? "<image>";
        Generator = new Generator(model, tokenizer, cacheTokens: cacheTokens, kvCache: kvCache);
    }

    /// <param name="cacheTokens">KV-cache pool shared by concurrent conversations (default: one context window).</param>
    /// <param name="kvCache">How that pool stores keys and values (see <see cref="KvCacheType"/>).</param>
    /// <param name="quant">Storage formats for the Linear weights of each component (default: as stored).</param>
    public static VlmPipeline Load(string dir, IBackend backend, Action<int, int>? progress = null, int? cacheTokens = null,
        KvCacheType kvCache = KvCacheType.F32, QuantPolicy? quant = null)
    {
        string type = ModelLoader.ReadModelType(dir);
        if (!ModelLoader.IsGenerative(type))
            throw new FastMMException($"{dir}: model_type '{type}' is a dual encoder; ask/chat/generate need a generative model ({string.Join(", ", ModelLoader.GenerativeTypes)})");
        var tokenizer = Tokenizer.FromFolder(dir);
        var template = ChatTemplates.FromFolder(dir) ?? throw new FastMMException($"{dir}: no chat template (tokenizer_config.json chat_template, chat_template.json or chat_template.jinja)");
        var images = ImageProcessor.FromConfigFile(Path.Combine(dir, "preprocessor_config.json"));
        var gc = ReadGenerationConfig(dir, tokenizer);
        string processorConfig = Path.Combine(dir, "processor_config.json");
        var model = ModelLoader.LoadVisionLanguageModel(dir, backend, progress, quant);
        try
        {
            LlavaPromptSettings? llava = null;
            int seqLen = 0;
            if (model is LlavaModel) llava = File.Exists(processorConfig) ? LlavaPromptSettings.FromProcessorConfig(processorConfig) : null;
            else seqLen = File.Exists(processorConfig) ? Idefics3PromptLayout.ImageSeqLenFromProcessorConfig(processorConfig) : model.TokensPerImage;
            if (model is Idefics3Model && seqLen != model.TokensPerImage)
                throw new FastMMException($"{processorConfig}: image_seq_len {seqLen} disagrees with the model's {model.TokensPerImage} tokens per image");
            return new VlmPipeline(model, tokenizer, template, images, gc, llava, seqLen, cacheTokens, kvCache);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private sealed record GenerationConfig(IReadOnlyList<int> Eos, int Pad, SamplingOptions Sampling);

    /// <summary>
    /// generation_config.json: eos_token_id (int or list; else the tokenizer's), pad_token_id (else eos[0], as HF
    /// generate() does), and the sampling defaults HF applies (greedy unless do_sample is true).
    /// </summary>
    private static GenerationConfig ReadGenerationConfig(string dir, Tokenizer tok)
    {
        string path = Path.Combine(dir, "generation_config.json");
        var eos = new List<int>();
        int? pad = null;
        var sampling = SamplingOptions.Greedy;
        if (File.Exists(path))
        {
            JsonDocument doc;
            try { doc = JsonDocument.Parse(File.ReadAllText(path)); }
            catch (JsonException e) { throw new FastMMException($"{path}: not valid JSON ({e.Message})"); }
            using (doc)
            {
                var root = doc.RootElement;
                if (root.ValueKind != JsonValueKind.Object) throw new FastMMException($"{path}: must contain a JSON object");
                int Int(JsonElement e, string field) => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int v)
                    ? v : throw new FastMMException($"{path}: {field} must be an integer, got {e.GetRawText()}");
                float? Num(string field) => root.TryGetProperty(field, out var e) && e.ValueKind != JsonValueKind.Null
                    ? (e.ValueKind == JsonValueKind.Number ? e.GetSingle() : throw new FastMMException($"{path}: {field} must be a number, got {e.GetRawText()}"))
                    : null;
                if (root.TryGetProperty("eos_token_id", out var eosEl) && eosEl.ValueKind != JsonValueKind.Null)
                {
                    if (eosEl.ValueKind == JsonValueKind.Array) eos.AddRange(eosEl.EnumerateArray().Select(x => Int(x, "eos_token_id")));
                    else eos.Add(Int(eosEl, "eos_token_id"));
                }
                if (root.TryGetProperty("pad_token_id", out var padEl) && padEl.ValueKind != JsonValueKind.Null) pad = Int(padEl, "pad_token_id");
                bool doSample = root.TryGetProperty("do_sample", out var ds) && ds.ValueKind == JsonValueKind.True;
                // HF's defaults when a field is absent: temperature 1, top_k 50, top_p 1, min_p off, penalty 1.
                if (doSample)
                    sampling = new SamplingOptions
                    {
                        Temperature = Num("temperature") ?? 1f, TopK = (int)(Num("top_k") ?? 50), TopP = Num("top_p") ?? 1f, MinP = Num("min_p") ?? 0f,
                    };
                if (Num("repetition_penalty") is float rp) sampling = sampling with { RepetitionPenalty = rp };
            }
        }
        if (eos.Count == 0 && tok.EosTokenId is int te) eos.Add(te);
        return new GenerationConfig(eos, pad ?? (eos.Count > 0 ? eos[0] : 0), sampling);
    }

    /// <summary>
    /// Renders the conversation with the chat template, expands each image placeholder into the model's image
    /// tokens, tokenises, and preprocesses the images. Cheap next to the model: callers check the budget first.
    /// </summary>
    public PreparedPrompt Prepare(IReadOnlyList<ChatTurn> conversation, bool addGenerationPrompt = true)
    {
        if (conversation.Count == 0) throw new FastMMException("the conversation is empty");
        var messages = conversation.Select(t =>
        {
            var parts = new List<object?>();
            foreach (var _ in t.Images ?? []) parts.Add(new Dictionary<string, object?> { ["type"] = "image" });
            parts.Add(new Dictionary<string, object?> { ["type"] = "text", ["text"] = t.Text });
            return new Dictionary<string, object?> { ["role"] = t.Role, ["content"] = parts };
        }).ToList();
        string text = Template.ApplyChatTemplate(messages, addGenerationPrompt);
        var images = conversation.SelectMany(t => t.Images ?? []).ToList();
        int placeholders = CountOccurrences(text, _imageToken);
        if (placeholders != images.Count)
            throw new FastMMException($"the rendered prompt has {placeholders} image placeholder(s) '{_imageToken}' but {images.Count} image(s) were given");

        float[] pixels = []; int[] shape = []; bool[] mask = [];
        if (images.Count > 0)
        {
            if (Images is Idefics3ImageProcessor idefics)
            {
                var o = idefics.Process(images);
                text = Idefics3PromptLayout.Expand(text, o.Grids, _imageSeqLen);
                pixels = o.PixelValues.Data; shape = o.PixelValues.Shape; mask = o.PixelAttentionMask;
            }
            else
            {
                var px = Images.PreprocessBatch(images);
                text = LlavaPromptLayout.Expand(text, Model.TokensPerImage, _imageToken);
                pixels = px.Data; shape = px.Shape;
            }
        }
        var ids = Tokenizer.Encode(text, addSpecialTokens: true);
        int imageTokens = ids.Count(id => id == Model.ImageTokenId);
        return new PreparedPrompt(ids, imageTokens, images.Count, pixels, shape, mask, text);
    }

    /// <summary>Generates a reply, streaming it through onChunk; checks the context window before any compute.</summary>
    public GenerationResult Ask(IReadOnlyList<ChatTurn> conversation, SamplingOptions sampling, int maxNewTokens,
        IReadOnlyList<string>? stopStrings = null, Action<GenerationChunk>? onChunk = null, CancellationToken ct = default)
    {
        var p = Prepare(conversation);
        Generator.CheckFits(p.Ids.Length, maxNewTokens, p.ImageTokens);
        using var features = Features(p);
        return Generator.Generate(Request(p, features, sampling, maxNewTokens, stopStrings), onChunk, ct);
    }

    /// <summary>Streams a reply as it is generated; cancellation ends the stream and leaves the pipeline usable.</summary>
    public async IAsyncEnumerable<string> StreamAsync(IReadOnlyList<ChatTurn> conversation, SamplingOptions sampling, int maxNewTokens,
        IReadOnlyList<string>? stopStrings = null, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
    {
        var p = Prepare(conversation);
        Generator.CheckFits(p.Ids.Length, maxNewTokens, p.ImageTokens);
        using var features = Features(p);
        await foreach (var chunk in Generator.StreamAsync(Request(p, features, sampling, maxNewTokens, stopStrings), ct))
            if (chunk.Text.Length > 0) yield return chunk.Text;
    }

    private GenerationRequest Request(PreparedPrompt p, Tensor? features, SamplingOptions sampling, int maxNewTokens, IReadOnlyList<string>? stops) => new()
    {
        PromptIds = p.Ids, ImageFeatures = features, Sampling = sampling, MaxNewTokens = maxNewTokens,
        EosTokenIds = EosTokenIds, StopStrings = stops ?? [],
    };

    /// <summary>The image features for a prepared prompt (null without images).</summary>
    public Tensor? Features(PreparedPrompt p)
    {
        if (p.Images == 0) return null;
        int n = p.PixelShape[0], s = p.PixelShape[^1];
        if (p.PixelShape[^2] != Model.ImageSize || s != Model.ImageSize)
            throw new FastMMException($"preprocessor_config.json produces {p.PixelShape[^2]}x{s} images but the vision tower takes {Model.ImageSize}x{Model.ImageSize}");
        using var px = Model.Backend.FromHost(p.PixelValues, n, 3, s, s);
        return Model.ImageFeatures(px, p.PixelAttentionMask);
    }

    private static int CountOccurrences(string text, string token)
    {
        int n = 0;
        for (int i = text.IndexOf(token, StringComparison.Ordinal); i >= 0; i = text.IndexOf(token, i + token.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    public void Dispose()
    {
        Generator.Dispose();
        Model.Dispose();
    }
}
