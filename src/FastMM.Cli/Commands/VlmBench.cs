using System.Diagnostics;
using FastMM.Cpu;
using FastMM.Models;

namespace FastMM.Cli.Commands;

/// <summary>
/// `fastmm bench` on a generative VLM: image encode, time to first token, prefill and decode speed, and the
/// decode bound from memory bandwidth measured in the same process (the text weights' stored bytes, read once per
/// token, ÷ the bandwidth): the host's read bandwidth on the CPU, the device's copy bandwidth on a GPU backend.
/// </summary>
internal static class VlmBench
{
    public static Dictionary<string, object> Run(string dir, IBackend backend, int runs, int promptTokens, int decodeTokens,
        FastMM.Backends.ProfilingBackend? profiler, TextWriter report, QuantPolicy? quant = null)
    {
        int threads = CpuParallel.Threads;
        var device = (backend is FastMM.Backends.ProfilingBackend pb ? pb.Inner : backend) as IDeviceBandwidth;
        double? peak = device is null ? CpuPeak.MeasureGflops(threads) : null;
        double bandwidth = device?.MeasureCopyBandwidth() ?? CpuPeak.MeasureReadBandwidth(threads);
        var sw = Stopwatch.StartNew();
        using var m = ModelLoader.LoadVisionLanguageModel(dir, backend, quant: quant);
        double loadMs = sw.Elapsed.TotalMilliseconds;
        var spec = m.Text.Spec;
        var rng = new Random(1);
        int s = m.ImageSize;
        var px = new float[3 * s * s];
        for (int i = 0; i < px.Length; i++) px[i] = (float)(rng.NextDouble() * 2 - 1);
        int[] RandomIds(int n) { var a = new int[n]; for (int i = 0; i < n; i++) { int id; do id = rng.Next(spec.Vocab); while (id == m.ImageTokenId); a[i] = id; } return a; }

        double Median(Func<double> once) => QuantBench.Median(runs, once);
        static double Time(Action a) => QuantBench.Time(a);

        // One tile through the vision tower and connector.
        double imageMs = Median(() => Time(() =>
        {
            using var t = backend.FromHost(px, 1, 3, s, s);
            using var f = m.ImageFeatures(t, default);
        }));

        using var cache = m.CreateCache(Math.Max(promptTokens, 64 + m.TokensPerImage) + decodeTokens + 16);
        // Time to first token: one image (its tokens in the prompt) + 64 text tokens, image encode included.
        var ttftIds = RandomIds(64 + m.TokensPerImage);
        for (int i = 0; i < m.TokensPerImage; i++) ttftIds[8 + i] = m.ImageTokenId;
        double ttftMs = Median(() => Time(() =>
        {
            using var t = backend.FromHost(px, 1, 3, s, s);
            using var f = m.ImageFeatures(t, default);
            using var seq = cache.NewSequence(ttftIds.Length);
            using var e = m.EmbedPrompt(ttftIds, f);
            using var l = m.Forward(e, seq, allLogits: false);
            l.ToArray();
        }));

        // On a backend that records decode steps, also the speed of one step at a time: the overlap's gain in one process.
        var (prefillTokS, decodeTokS, serialTokS) = QuantBench.TextSpeed(m, runs, promptTokens, decodeTokens, serialToo: backend is IStepGraphs);

        if (profiler is not null)
        {
            profiler.Reset();
            using var seq = cache.NewSequence(decodeTokens + 1);
            for (int i = 0; i < decodeTokens; i++)
            {
                using var l = m.Decode(rng.Next(spec.Vocab), seq);
            }
            report.WriteLine($"per-op time per decode token (mean of {decodeTokens}):");
            foreach (var (op, ms, calls) in profiler.Report()) report.WriteLine($"  {op,-32} {ms / decodeTokens,9:F3} ms  {calls / decodeTokens,5} calls");
        }

        // Every text Linear (a tied lm_head included) is read once per token, in the format it is stored in.
        long weightBytes = m.Quantization.BytesPerComponent.GetValueOrDefault(ModelComponent.Text);
        double bound = bandwidth * 1e9 / weightBytes;
        var r = new Dictionary<string, object>
        {
            ["model"] = Path.GetFullPath(dir), ["model_type"] = m.ModelType, ["backend"] = backend.Name,
            [device is null ? "threads" : "device"] = device is null ? threads : device.DeviceName,
            ["load_ms"] = Math.Round(loadMs, 1),
            ["image_encode_ms"] = Math.Round(imageMs, 1),
            [$"ttft_ms_1image_{ttftIds.Length}tok"] = Math.Round(ttftMs, 1),
            [$"prefill_tok_s_{promptTokens}"] = Math.Round(prefillTokS, 1),
            ["decode_tok_s"] = Math.Round(decodeTokS, 2),
            ["decode_weight_bytes_per_token"] = weightBytes,
            [device is null ? "read_bandwidth_gb_s" : "device_copy_bandwidth_gb_s"] = Math.Round(bandwidth, 2),
            ["decode_bound_tok_s"] = Math.Round(bound, 2),
            ["decode_fraction_of_bound"] = Math.Round(decodeTokS / bound, 3),
        };
        if (peak is { } gflops) r["fma_peak_gflops"] = Math.Round(gflops, 1);
        if (backend is IStepGraphs g)
        {
            var (replays, captures, eager) = g.StepCounts;
            r["decode_steps_replayed"] = replays;
            r["decode_steps_captured"] = captures;
            r["decode_steps_eager"] = eager;
            r["decode_step_device_ops"] = g.OpsPerStep;
            var (recordMs, commitMs) = g.StepHostMs;
            r["decode_step_host_record_ms"] = Math.Round(recordMs, 3);
            r["decode_step_host_commit_ms"] = Math.Round(commitMs, 3);
            r["decode_tok_s_one_step_at_a_time"] = Math.Round(serialTokS, 2);
        }
        r["peak_memory_mb"] = Process.GetCurrentProcess().PeakWorkingSet64 / (1 << 20);
        return r;
    }
}
