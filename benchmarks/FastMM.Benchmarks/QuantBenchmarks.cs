using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using FastMM.Cpu;
using FastMM.Quant;

namespace FastMM.Benchmarks;

/// <summary>Bytes of stored weights read per second (weight bytes of the case's Format and Shape ÷ mean time).</summary>
public sealed class WeightBandwidthColumn() : PerSecondColumn("weight GB/s", "stored weight bytes (F32 or the quantized blocks) per second at the mean time", 1)
{
    protected override double? Work(BenchmarkCase c)
        => Parameter(c, "Shape") is GemmShape shape && Parameter(c, "Format") is string format ? QuantBenchmarks.WeightBytes(format, shape) : null;
}

public sealed class QuantConfig : ManualConfig
{
    public QuantConfig() { AddColumn(new GflopsColumn(), new WeightBandwidthColumn()); }
}

/// <summary>
/// Quantized Linear (QuantGemm) against F32 (Gemm) at SmolLM2-135M's decode (M = 1) and prefill (M = 128) shapes,
/// 2 threads. Decode cases rotate through copies of the weight totalling at least 256 MB, so weights stream from memory
/// as a model's layers do; `quant-quick` prints the same comparison (hot and cold) in one run.
/// </summary>
[Config(typeof(QuantConfig))]
public class QuantBenchmarks
{
    [Params("f32", "q8_0", "q4_0", "int4-g64")] public string Format = "";
    [ParamsSource(nameof(Shapes))] public GemmShape Shape = null!;

    public static IEnumerable<GemmShape> Shapes =>
    [
        new("SmolLM2 gate/up decode", 1, 1536, 576),
        new("SmolLM2 down decode", 1, 576, 1536),
        new("SmolLM2 lm_head decode", 1, 49152, 576),
        new("SmolLM2 gate_up prefill", 128, 3072, 576),
    ];

    public static long WeightBytes(string format, GemmShape s)
        => format == "f32" ? (long)s.N * s.K * sizeof(float) : s.N * QuantFormats.Parse(format).RowBytes(s.K);

    private PackedWeight[] _f32 = [];
    private QuantizedMatrix[] _quant = [];
    private float[] _x = [], _y = [];
    private int _call;

    [GlobalSetup]
    public void Setup()
    {
        CpuParallel.Threads = 2;
        var rng = new Random(1);
        float[] Make(int n) => Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var w = Make(Shape.N * Shape.K);
        _x = Make(Shape.M * Shape.K);
        _y = new float[Shape.M * Shape.N];
        int copies = Shape.M == 1 ? (int)Math.Max(2, (256L << 20) / WeightBytes(Format, Shape) + 1) : 1;
        if (Format == "f32")
        {
            _f32 = new PackedWeight[copies];
            for (int i = 0; i < copies; i++) _f32[i] = PackedWeight.Pack(w, Shape.N, Shape.K);
            return;
        }
        var type = QuantFormats.Parse(Format).Type;
        var first = QuantizedMatrix.Quantize(w, Shape.N, Shape.K, type);
        _quant = new QuantizedMatrix[copies];
        _quant[0] = first;
        for (int i = 1; i < copies; i++) _quant[i] = QuantizedMatrix.FromBytes(first.Bytes, Shape.N, Shape.K, type);
    }

    [Benchmark]
    public void Linear()
    {
        int i = _call++;
        if (_f32.Length > 0) Gemm.Linear(_x, Shape.M, _f32[i % _f32.Length], [], _y);
        else QuantGemm.Linear(_x, Shape.M, _quant[i % _quant.Length], [], _y);
    }
}
