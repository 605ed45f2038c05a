using System.Diagnostics;
using FastMM.Models;
using FastMM.Quant;
using FastMM.Runtime;
using FastMM.Runtime.Generation;
using FastMM.Runtime.Images;

namespace FastMM.Cli.Commands;

/// <summary>One quantization scheme of a quant-bench run: a name and the per-component policy it loads with.</summary>
internal sealed record QuantScheme(string Name, QuantPolicy Policy)
{
    /// <summary>"q4_0" (every component) or "vision:f16+text:q4_0" (per component; unnamed components stay as stored).</summary>
    public static QuantScheme Parse(string spec)
    {
        spec = spec.Trim();
        if (!spec.Contains(':')) return new QuantScheme(spec, QuantPolicy.Parse(spec));
        string? vision = null, projector = null, text = null;
        foreach (var part in spec.Split('+', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var kv = part.Split(':', 2, StringSplitOptions.TrimEntries);
            if (kv.Length != 2) throw new FastMMException($"--schemes: '{part}' is not COMPONENT:SCHEME");
            switch (kv[0])
            {
                case "vision": vision = kv[1]; break;
                case "projector": projector = kv[1]; break;
                case "text": text = kv[1]; break;
                default: throw new FastMMException($"--schemes: unknown component '{kv[0]}' in '{spec}' (vision, projector, text)");
            }
        }
        return new QuantScheme(spec, QuantPolicy.Parse(null, vision, projector, text));
    }
}

/// <summary>
/// `fastmm quant-bench`: every scheme on the same model in one process, measured the same way: weight bytes, load,
/// image encode, prefill and decode speed, peak managed memory, and accuracy against the unquantized model on the
/// same inputs (logit KL and top-1 agreement, vision-feature cosine) plus Shapes World task accuracy when --data is given.
/// </summary>
internal static class QuantBench
{
    public sealed record Options(int Runs, int PromptTokens, int DecodeTokens, int Prompts, string? DataFolder, int? DataLimit);

    /// <summary>The reference run's outputs that every scheme is compared with.</summary>
    private sealed class Reference
    {
        public List<float[]> Features = new();          // per prompt: image features (VLM) or the image embedding (dual encoder)
        public List<float[]> Logits = new();            // per prompt: logits [positions, V] (VLM) or the 8 candidate logits (dual encoder)
        public List<int[]> Sequences = new();           // VLM: prompt + reference greedy answer
        public List<int> FirstScored = new();           // VLM: first position whose logits are compared
    }

    public static List<Dictionary<string, object?>> Run(string dir, IBackend backend, IReadOnlyList<QuantScheme> schemes, Options o, ProgressBar bar, TextWriter log)
    {
        bool generative = ModelLoader.IsGenerative(ModelLoader.ReadModelType(dir));
        var scenes = o.DataFolder is { } folder ? ShapesEval.ReadScenes(folder, o.DataLimit) : null;
        if (!generative && scenes is null) throw new FastMMException("quant-bench on a CLIP/SigLIP model needs --data (Shapes World scenes to rank captions on)");
        var results = new List<Dictionary<string, object?>>();
        Reference? reference = null;
        // The decode bound of each scheme: its text Linear bytes (read once per token) over this process's read bandwidth.
        double bandwidth = generative ? FastMM.Cpu.CpuPeak.MeasureReadBandwidth(FastMM.Cpu.CpuParallel.Threads) : 0;
        if (generative) log.WriteLine($"read bandwidth {bandwidth:F1} GB/s ({FastMM.Cpu.CpuParallel.Threads} threads, measured in this process)");
        foreach (var scheme in new[] { new QuantScheme("reference", QuantPolicy.None) }.Concat(schemes))
        {
            bool isRef = reference is null;
            log.WriteLine($"{scheme.Name}: {scheme.Policy}");
            using var memory = new PeakMemory();
            var row = generative
                ? RunVlm(dir, backend, scheme, o, scenes, bar, isRef ? (reference = new Reference()) : reference!, isRef, log, bandwidth)
                : RunDualEncoder(dir, backend, scheme, o, scenes!, bar, isRef ? (reference = new Reference()) : reference!, isRef, log);
            row["peak_mem_bytes"] = memory.Peak;
            results.Add(row); // the reference row too: it is the baseline the accuracy columns and speed ratios refer to
        }
        return results;
    }

    /// <summary>One comparison input: token ids (image tokens included) and the pixels of its image(s).</summary>
    private sealed record Prompt(int[] Ids, float[] Pixels, int[] PixelShape, bool[] PixelMask);

    private static Dictionary<string, object?> RunVlm(string dir, IBackend backend, QuantScheme scheme, Options o, List<EvalScene>? scenes,
        ProgressBar bar, Reference reference, bool isRef, TextWriter log, double bandwidth)
    {
        // A folder without tokenizer/chat template (e.g. `fastmm synth` random weights) is benchmarked on the model
        // alone, with random token prompts; task accuracy then needs a full folder.
        bool full = File.Exists(Path.Combine(dir, "tokenizer.json"));
        if (!full && scenes is not null) throw new FastMMException($"{dir}: --data needs a complete folder (tokenizer.json, chat template) to ask questions");
        var sw = Stopwatch.StartNew();
        using var pipe = full ? bar.Run($"{scheme.Name}: loading", prog => VlmPipeline.Load(dir, backend, prog, quant: scheme.Policy)) : null;
        using var bare = full ? null : bar.Run($"{scheme.Name}: loading", prog => ModelLoader.LoadVisionLanguageModel(dir, backend, prog, scheme.Policy));
        double loadMs = sw.Elapsed.TotalMilliseconds;
        var m = pipe?.Model ?? bare!;
        LogWeights(log, scheme.Name, m.Quantization);
        var prompts = pipe is not null ? Prompts(pipe, scenes, o.Prompts) : RandomPrompts(m, o.Prompts);

        double imageMs = Median(o.Runs, () => Time(() => { using var f = Features(m, prompts[0]); }));
        var (prefill, decode, _) = TextSpeed(m, o.Runs, o.PromptTokens, o.DecodeTokens, serialToo: false);
        long textBytes = m.Quantization.BytesPerComponent.GetValueOrDefault(ModelComponent.Text);
        double bound = bandwidth * 1e9 / textBytes;
        log.WriteLine($"{scheme.Name}: decode reads {textBytes / 1e6:F1} MB of text weights per token -> bound {bound:F0} tok/s; measured {decode:F1} = {decode / bound:F2} of it");

        // Accuracy against the reference: logits on prompt + the reference's greedy answer (random prompts: every
        // position after the image), and the features of every image.
        double kl = 0, cos = 0;
        long agree = 0, positions = 0;
        bar.Run($"{scheme.Name}: comparing logits", prog =>
        {
            for (int i = 0; i < prompts.Count; i++)
            {
                using var features = Features(m, prompts[i]);
                var f = features.ToArray();
                if (isRef)
                {
                    int[] answer = pipe is null ? [] : pipe.Generator.Generate(new GenerationRequest
                    {
                        PromptIds = prompts[i].Ids, ImageFeatures = features, MaxNewTokens = 24, EosTokenIds = pipe.EosTokenIds, Sampling = SamplingOptions.Greedy,
                    }).TokenIds;
                    reference.Sequences.Add([.. prompts[i].Ids, .. answer]);
                    reference.FirstScored.Add(pipe is null ? Array.LastIndexOf(prompts[i].Ids, m.ImageTokenId) + 1 : prompts[i].Ids.Length - 1);
                    reference.Features.Add(f);
                }
                var seq = reference.Sequences[i];
                var logits = VlmTensors.Logits(m, new TextInput(1, seq.Length, seq, null), features, "quant-bench");
                int v = m.Text.Vocab, first = reference.FirstScored[i];
                var scored = logits.AsSpan(first * v, (seq.Length - first) * v).ToArray();
                prog(i + 1, prompts.Count);
                if (isRef) { reference.Logits.Add(scored); continue; }
                cos += Cosine(reference.Features[i], f);
                for (int p = 0; p < seq.Length - first; p++)
                {
                    var refRow = reference.Logits[i].AsSpan(p * v, v);
                    var row = scored.AsSpan(p * v, v);
                    kl += KlDivergence(refRow, row);
                    agree += ArgMax(refRow) == ArgMax(row) ? 1 : 0;
                    positions++;
                }
            }
            return 0;
        });

        double? task = null;
        if (scenes is not null)
            task = bar.Run($"{scheme.Name}: Shapes World VQA", prog => ShapesEval.Vqa(pipe!, scenes, maxNewTokens: 24, progress: prog)).Overall;

        return Record(scheme.Name, m.Quantization, loadMs, imageMs, prefill, decode,
            isRef ? 0 : kl / positions, isRef ? 1 : (double)agree / positions, isRef ? 1 : cos / prompts.Count, task, null);
    }

    private static Tensor Features(VisionLanguageModel m, Prompt p)
    {
        using var px = m.Backend.FromHost(p.Pixels, p.PixelShape);
        return m.ImageFeatures(px, p.PixelMask);
    }

    private static Dictionary<string, object?> RunDualEncoder(string dir, IBackend backend, QuantScheme scheme, Options o, List<EvalScene> scenes,
        ProgressBar bar, Reference reference, bool isRef, TextWriter log)
    {
        var sw = Stopwatch.StartNew();
        using var pipe = bar.Run($"{scheme.Name}: loading", prog => DualEncoderPipeline.Load(dir, backend, needText: true, prog, scheme.Policy));
        double loadMs = sw.Elapsed.TotalMilliseconds;
        LogWeights(log, scheme.Name, pipe.Model.Quantization);
        var images = scenes.Take(o.Prompts).Select(s => ImageDecoder.Decode(s.Image)).ToList();
        double imageMs = Median(o.Runs, () => Time(() => pipe.EmbedImages([images[0]])));

        // The distribution over 8 captions (its own + 7 others, fixed per scene) is what retrieval uses.
        var captions = scenes.Select(s => "a photo of " + s.Caption).Distinct().ToList();
        double kl = 0, cos = 0;
        int agree = 0;
        for (int i = 0; i < images.Count; i++)
        {
            var candidates = new[] { "a photo of " + scenes[i].Caption }
                .Concat(captions.Where(c => c != "a photo of " + scenes[i].Caption).OrderBy(c => StableHash(c, i)).Take(7)).ToList();
            var emb = pipe.EmbedImages([images[i]]);
            var logits = pipe.Rank([images[i]], candidates);
            if (isRef) { reference.Features.Add(emb); reference.Logits.Add(logits); continue; }
            cos += Cosine(reference.Features[i], emb);
            kl += KlDivergence(reference.Logits[i], logits);
            agree += ArgMax(reference.Logits[i]) == ArgMax(logits) ? 1 : 0;
        }
        double recall = bar.Run($"{scheme.Name}: recall@1", prog => ShapesEval.Retrieval(pipe, scenes, progress: prog)).Overall;
        int n = images.Count;
        return Record(scheme.Name, pipe.Model.Quantization, loadMs, imageMs, null, null,
            isRef ? 0 : kl / n, isRef ? 1 : (double)agree / n, isRef ? 1 : cos / n, null, recall);
    }

    private static Dictionary<string, object?> Record(string scheme, Models.Blocks.QuantReport q, double loadMs, double imageMs, double? prefill, double? decode,
        double kl, double top1, double cos, double? task, double? recall) => new()
    {
        ["scheme"] = scheme,
        ["weight_bytes"] = q.TotalBytes,
        ["load_ms"] = Math.Round(loadMs, 1),
        ["image_encode_ms"] = Math.Round(imageMs, 2),
        ["prefill_tok_s"] = prefill is { } p ? Math.Round(p, 1) : null,
        ["decode_tok_s"] = decode is { } d ? Math.Round(d, 2) : null,
        ["peak_mem_bytes"] = 0L,
        ["kl_vs_ref"] = Math.Round(kl, 6),
        ["top1_agreement"] = Math.Round(top1, 4),
        ["vision_cosine"] = Math.Round(cos, 6),
        ["task_accuracy"] = task is { } t ? Math.Round(t, 4) : null,
        ["recall_at_1"] = recall is { } r ? Math.Round(r, 4) : null,
    };

    /// <summary>Per storage format: matrices, parameters, bytes, and bytes against F32 (4 per parameter).</summary>
    private static void LogWeights(TextWriter log, string scheme, Models.Blocks.QuantReport q)
    {
        foreach (var (format, (n, parameters, bytes)) in q.PerFormat.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            log.WriteLine($"{scheme}: {format,-9} {n,4} Linear weights, {parameters / 1e6,8:F2} M parameters, {bytes / 1e6,8:F2} MB = {bytes / (4.0 * parameters):F3} of F32");
        log.WriteLine($"{scheme}: other weights (embeddings, norms, positions; F32) {q.TensorBytes / 1e6:F2} MB");
        foreach (var k in q.KeptAsStored) log.WriteLine($"{scheme}: kept as stored: {k}");
    }

    /// <summary>Single-question prompts through the chat template: one per scene (cycling through the kinds) or, without scenes, a random image + question.</summary>
    private static List<Prompt> Prompts(VlmPipeline pipe, List<EvalScene>? scenes, int count)
    {
        var turns = new List<ChatTurn>();
        if (scenes is not null)
            for (int i = 0; i < Math.Min(count, scenes.Count); i++)
                turns.Add(new ChatTurn("user", scenes[i].Questions[i % scenes[i].Questions.Count].Question, [ImageDecoder.Decode(scenes[i].Image)]));
        else
        {
            var rng = new Random(1234);
            string[] questions = ["Describe the image.", "What is in the picture?", "How many shapes are there?", "What color is the circle?"];
            for (int i = 0; i < count; i++)
            {
                int side = 96 + 32 * (i % 3);
                var rgb = new byte[side * side * 3];
                rng.NextBytes(rgb);
                turns.Add(new ChatTurn("user", questions[i % questions.Length], [new RgbImage(side, side, rgb)]));
            }
        }
        return turns.Select(t =>
        {
            var p = pipe.Prepare([t]);
            return new Prompt(p.Ids, p.PixelValues, [p.PixelShape[0], 3, p.PixelShape[^2], p.PixelShape[^1]], p.PixelAttentionMask);
        }).ToList();
    }

    /// <summary>For a bare model: one random image (one tile) between random text tokens, as `fastmm bench` prompts.</summary>
    private static List<Prompt> RandomPrompts(VisionLanguageModel m, int count)
    {
        var rng = new Random(1234);
        int s = m.ImageSize, vocab = m.Text.Spec.Vocab;
        var prompts = new List<Prompt>();
        for (int i = 0; i < count; i++)
        {
            var ids = new List<int>();
            for (int j = 0; j < 8; j++) ids.Add(RandomText(rng, m, vocab));
            ids.AddRange(Enumerable.Repeat(m.ImageTokenId, m.TokensPerImage));
            for (int j = 0; j < 24; j++) ids.Add(RandomText(rng, m, vocab));
            var px = new float[3 * s * s];
            for (int j = 0; j < px.Length; j++) px[j] = (float)(rng.NextDouble() * 2 - 1);
            prompts.Add(new Prompt([.. ids], px, [1, 3, s, s], []));
        }
        return prompts;
    }

    private static int RandomText(Random rng, VisionLanguageModel m, int vocab)
    {
        int id;
        do id = rng.Next(vocab); while (id == m.ImageTokenId);
        return id;
    }

    /// <summary>
    /// Prefill of <paramref name="promptTokens"/> random tokens and decode tokens/s after a 32-token prompt (as `fastmm
    /// bench`). Decode runs as the generator does, step i + 1 recorded while step i runs;
    /// with <paramref name="serialToo"/> also one step at a time (record, run, read back), so a GPU backend's gain from
    /// the overlap is a ratio taken in the same process (0 when not measured).
    /// </summary>
    internal static (double Prefill, double Decode, double DecodeSerial) TextSpeed(VisionLanguageModel m, int runs, int promptTokens,
        int decodeTokens, bool serialToo)
    {
        var rng = new Random(1);
        int vocab = m.Text.Spec.Vocab;
        int[] RandomIds(int n) { var a = new int[n]; for (int i = 0; i < n; i++) a[i] = RandomText(rng, m, vocab); return a; }
        using var cache = m.CreateCache(promptTokens + decodeTokens + 48);
        var prompt = RandomIds(promptTokens);
        double prefillMs = Median(runs, () => Time(() =>
        {
            using var seq = cache.NewSequence(prompt.Length);
            using var e = m.Text.Embed(prompt);
            using var l = m.Forward(e, seq, allLogits: false);
        }));
        var decodePrompt = RandomIds(32);
        var logits = new float[vocab];
        // What greedy generation reads back per token: the argmax on a GPU backend, else the row of logits.
        var argmax = m.Backend as IDeviceArgmax;
        void ReadBack(Tensor t) { if (argmax is not null) argmax.Argmax(t); else m.Backend.ToHost(t, logits); }
        double MsPerToken(bool overlap) => Median(runs, () =>
        {
            using var seq = cache.NewSequence(decodePrompt.Length + decodeTokens);
            using (var e = m.Text.Embed(decodePrompt)) using (m.Forward(e, seq, allLogits: false)) { }
            var w = Stopwatch.StartNew();
            if (!overlap)
            {
                for (int i = 0; i < decodeTokens; i++)
                {
                    using var l = m.Decode(rng.Next(vocab), seq);
                    ReadBack(l);
                }
                return w.Elapsed.TotalMilliseconds / decodeTokens;
            }
            // As the generator: step i + 1 is recorded while step i runs, then step i's logits are read back.
            Tensor? previous = null;
            for (int i = 0; i < decodeTokens; i++)
            {
                using var next = m.PrepareDecode(seq);
                if (previous is not null) using (previous) ReadBack(previous);
                previous = next.Run(rng.Next(vocab));
            }
            using (previous) if (previous is not null) ReadBack(previous);
            return w.Elapsed.TotalMilliseconds / decodeTokens;
        });
        double overlapped = 1000 / MsPerToken(overlap: true);
        double serial = serialToo ? 1000 / MsPerToken(overlap: false) : 0;
        return (promptTokens / (prefillMs / 1000), overlapped, serial);
    }

    internal static double Median(int runs, Func<double> once)
    {
        once(); // warm-up
        var t = new double[Math.Max(runs, 1)];
        for (int i = 0; i < t.Length; i++) t[i] = once();
        Array.Sort(t);
        return t[t.Length / 2];
    }

    internal static double Time(Action a) { var w = Stopwatch.StartNew(); a(); return w.Elapsed.TotalMilliseconds; }

    /// <summary>KL(p‖q) of the softmax distributions of two logit rows, in nats (double accumulation).</summary>
    internal static double KlDivergence(ReadOnlySpan<float> p, ReadOnlySpan<float> q)
    {
        double LogSumExp(ReadOnlySpan<float> x)
        {
            double max = double.NegativeInfinity;
            foreach (var v in x) max = Math.Max(max, v);
            double s = 0;
            foreach (var v in x) s += Math.Exp(v - max);
            return max + Math.Log(s);
        }
        double lp = LogSumExp(p), lq = LogSumExp(q), kl = 0;
        for (int i = 0; i < p.Length; i++)
        {
            double logP = p[i] - lp;
            kl += Math.Exp(logP) * (logP - (q[i] - lq));
        }
        return Math.Max(kl, 0);
    }

    internal static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++) { dot += (double)a[i] * b[i]; na += (double)a[i] * a[i]; nb += (double)b[i] * b[i]; }
        return dot / Math.Sqrt(na * nb);
    }

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    private static int StableHash(string s, int salt)
    {
        unchecked
        {
            int h = 17 + salt;
            foreach (char c in s) h = h * 31 + c;
            return h;
        }
    }

    /// <summary>Peak managed-heap bytes (where FastMM keeps weights, KV cache and activations) while it lives, sampled every 5 ms.</summary>
    private sealed class PeakMemory : IDisposable
    {
        private readonly Timer _timer;
        private long _peak;

        public PeakMemory()
        {
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
            _peak = GC.GetTotalMemory(forceFullCollection: true);
            _timer = new Timer(_ => Sample(), null, 0, 5);
        }

        private void Sample()
        {
            long now = GC.GetTotalMemory(false);
            long seen;
            while (now > (seen = Interlocked.Read(ref _peak)) && Interlocked.CompareExchange(ref _peak, now, seen) != seen) { }
        }

        public long Peak { get { Sample(); return Interlocked.Read(ref _peak); } }

        public void Dispose() => _timer.Dispose();
    }
}
