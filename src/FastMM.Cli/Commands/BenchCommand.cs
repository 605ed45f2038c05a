using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using FastMM.Cpu;
using FastMM.Models;

namespace FastMM.Cli.Commands;

/// <summary>
/// `fastmm bench`: load time, image-encode latency (batch 1 and 8), text-encode latency and peak memory
/// for a dual encoder, with the machine's FMA peak measured in the same run so figures are comparable.
/// </summary>
internal static class BenchCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = CommonOptions.Model();
        var runs = new Option<int>("--runs") { Description = "timed runs per measurement (median reported)", DefaultValueFactory = _ => 5 };
        var batch = new Option<int>("--batch") { Description = "the larger image batch to time besides batch 1", DefaultValueFactory = _ => 8 };
        var json = new Option<FileInfo?>("--json") { Description = "also write the results as JSON" };
        var profile = new Option<bool>("--profile") { Description = "also print time per op for one batch-1 image encode" };
        var promptLen = new Option<int>("--prompt-tokens") { Description = "generative models: prompt length for prefill speed", DefaultValueFactory = _ => 512 };
        var decodeLen = new Option<int>("--decode-tokens") { Description = "generative models: tokens timed for decode speed", DefaultValueFactory = _ => 64 };
        var cmd = new Command("bench", "Benchmark a model end to end: load, encode latency or TTFT/prefill/decode speed, peak memory") { model, runs, batch, json, profile, promptLen, decodeLen };
        cmd.SetHandler(stderr, p =>
        {
            string dir = p.GetValue(model)!;
            int n = Math.Max(1, p.GetValue(runs)), big = Math.Max(1, p.GetValue(batch));
            IBackend backend = CommonOptions.CreateBackend(p);
            if (ModelLoader.IsGenerative(ModelLoader.ReadModelType(dir)))
            {
                var vlmProfiler = p.GetValue(profile) ? new FastMM.Backends.ProfilingBackend(backend) : null;
                using (backend)
                {
                    var g = VlmBench.Run(dir, vlmProfiler ?? backend, n, Math.Max(1, p.GetValue(promptLen)), Math.Max(1, p.GetValue(decodeLen)), vlmProfiler, stdout, CommonOptions.Policy(p));
                    foreach (var (k, v) in g) stdout.WriteLine($"{k,-34} {v}");
                    if (p.GetValue(json) is FileInfo jf) File.WriteAllText(jf.FullName, JsonSerializer.Serialize(g, new JsonSerializerOptions { WriteIndented = true }));
                }
                return 0;
            }
            var profiler = p.GetValue(profile) ? new FastMM.Backends.ProfilingBackend(backend) : null;
            if (profiler is not null) backend = profiler;
            using var _ = backend;
            // The FMA peak is measured before anything else runs: the kernel pool's spinning workers would halve it later.
            // A GPU backend is measured against nothing here: the host's FMA peak says nothing about it.
            bool onDevice = (profiler?.Inner ?? backend) is IDeviceBandwidth;
            double? peakGflops = onDevice ? null : CpuPeak.MeasureGflops(CpuParallel.Threads);
            var sw = Stopwatch.StartNew();
            using var m = ModelLoader.LoadDualEncoder(dir, backend);
            double loadMs = sw.Elapsed.TotalMilliseconds;

            var rng = new Random(1);
            float[] Pixels(int b) { var a = new float[b * 3 * m.ImageSize * m.ImageSize]; for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
            double Median(Action run)
            {
                run(); // warm-up: JIT, pools
                var t = new double[n];
                for (int i = 0; i < n; i++) { var s = Stopwatch.StartNew(); run(); t[i] = s.Elapsed.TotalMilliseconds; }
                Array.Sort(t);
                return t[n / 2];
            }
            var px1 = Pixels(1); var pxB = Pixels(big);
            double img1 = Median(() => m.EmbedImages(px1, 1));
            double imgB = Median(() => m.EmbedImages(pxB, big));
            int len = m.TextLength;
            var ids = new int[8 * len];
            for (int i = 0; i < ids.Length; i++) ids[i] = 1 + rng.Next(100);
            double txt1 = Median(() => m.EmbedTexts(new TextInput(1, len, ids[..len], null)));
            double txt8 = Median(() => m.EmbedTexts(new TextInput(8, len, ids, null)));
            double gflop = VisionGflop(m);
            long peakMem = Process.GetCurrentProcess().PeakWorkingSet64;

            var r = new Dictionary<string, object>
            {
                ["model"] = Path.GetFullPath(dir), ["model_type"] = m.ModelType, ["backend"] = backend.Name, ["threads"] = CpuParallel.Threads,
                ["load_ms"] = Math.Round(loadMs, 1),
                ["image_encode_ms_batch1"] = Math.Round(img1, 2), [$"image_encode_ms_batch{big}"] = Math.Round(imgB, 2),
                [$"image_encode_ms_per_image_batch{big}"] = Math.Round(imgB / big, 2),
                ["text_encode_ms_batch1"] = Math.Round(txt1, 2), ["text_encode_ms_batch8"] = Math.Round(txt8, 2),
                ["vision_gflop_per_image"] = Math.Round(gflop, 2),
                ["vision_gflops_batch1"] = Math.Round(gflop / (img1 / 1000), 1), [$"vision_gflops_batch{big}"] = Math.Round(gflop * big / (imgB / 1000), 1),
            };
            if (peakGflops is { } peak)
            {
                r["fma_peak_gflops"] = Math.Round(peak, 1);
                r["fraction_of_peak_batch1"] = Math.Round(gflop / (img1 / 1000) / peak, 3);
                r[$"fraction_of_peak_batch{big}"] = Math.Round(gflop * big / (imgB / 1000) / peak, 3);
            }
            r["peak_memory_mb"] = peakMem / (1 << 20);
            foreach (var (k, v) in r) stdout.WriteLine($"{k,-34} {v}");
            if (profiler is not null)
            {
                profiler.Reset();
                for (int i = 0; i < n; i++) m.EmbedImages(px1, 1);
                stdout.WriteLine($"\nper-op time, image encode batch 1, mean of {n} runs:");
                foreach (var (op, ms, calls) in profiler.Report()) stdout.WriteLine($"  {op,-32} {ms / n,9:F2} ms  {calls / n,5} calls");
            }
            if (p.GetValue(json) is FileInfo f) File.WriteAllText(f.FullName, JsonSerializer.Serialize(r, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        });
        return cmd;
    }

    /// <summary>Multiply-add work of one image through the vision tower (GEMMs + attention), in GFLOP.</summary>
    private static double VisionGflop(DualEncoderModel m)
    {
        var spec = m switch
        {
            ClipModel c => c.Vision.Transformer.Spec,
            SiglipModel s => s.Vision.Transformer.Spec,
            _ => throw new InvalidOperationException(),
        };
        double t = spec.Positions, d = spec.Encoder.Hidden, f = spec.Encoder.Intermediate;
        double perLayer = 2 * t * d * d * 4 + 2 * t * d * f * 2 + 2 * t * t * d * 2;
        double patch = 2 * spec.Patches * d * spec.Channels * spec.PatchSize * spec.PatchSize;
        return (perLayer * spec.Encoder.Layers + patch) / 1e9;
    }
}
