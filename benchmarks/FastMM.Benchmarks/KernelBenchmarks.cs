using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using FastMM.Cpu;

namespace FastMM.Benchmarks;

/// <summary>
/// A custom column showing an amount of work per nanosecond of the case's mean time (i.e. G-units per second);
/// subclasses say how much work a case does (null when the column does not apply to it).
/// </summary>
public abstract class PerSecondColumn(string name, string legend, int priority) : IColumn
{
    public string Id => GetType().Name;
    public string ColumnName => name;
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => priority;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => legend;
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        double? meanNs = summary[benchmarkCase]?.ResultStatistics?.Mean;
        return meanNs is double ns && Work(benchmarkCase) is double work ? (work / ns).ToString("F1") : "-";
    }

    protected abstract double? Work(BenchmarkCase c);

    protected static object? Parameter(BenchmarkCase c, string name) => c.Parameters.Items.FirstOrDefault(p => p.Name == name)?.Value;
}

/// <summary>GFLOP/s from each case's <c>Shape</c> parameter (anything with a Flops property).</summary>
public sealed class GflopsColumn() : PerSecondColumn("GFLOP/s", "fp32 GFLOP/s at the mean time (2 flops per multiply-add)", 0)
{
    protected override double? Work(BenchmarkCase c) => Parameter(c, "Shape") switch
    {
        GemmShape g => g.Flops,
        AttentionShape a => a.Flops,
        _ => null,
    };
}

public sealed class KernelConfig : ManualConfig
{
    public KernelConfig() { AddColumn(new GflopsColumn()); }
}

/// <summary>GEMM at the CLIP ViT-B/32 and SigLIP-B/16-512 vision shapes, 2 threads.</summary>
[Config(typeof(KernelConfig))]
public class GemmBenchmarks
{
    [ParamsSource(nameof(Shapes))] public GemmShape Shape = null!;
    public static IEnumerable<GemmShape> Shapes => GemmShape.All;

    private float[] _a = [], _bias = [], _c = [];
    private PackedWeight _w = null!;

    [GlobalSetup]
    public void Setup()
    {
        CpuParallel.Threads = 2;
        var rng = new Random(1);
        _a = Enumerable.Range(0, Shape.M * Shape.K).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var w = Enumerable.Range(0, Shape.N * Shape.K).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _bias = new float[Shape.N];
        _c = new float[Shape.M * Shape.N];
        _w = PackedWeight.Pack(w, Shape.N, Shape.K);
    }

    [Benchmark]
    public void Linear() => Gemm.Linear(_a, Shape.M, _w, _bias, _c);
}

/// <summary>Fused attention at (B=1, H=12, T=50/1024, D=64), 2 threads.</summary>
[Config(typeof(KernelConfig))]
public class AttentionBenchmarks
{
    [ParamsSource(nameof(Shapes))] public AttentionShape Shape = null!;
    public static IEnumerable<AttentionShape> Shapes => AttentionShape.All;

    private float[] _q = [], _k = [], _v = [], _o = [];

    [GlobalSetup]
    public void Setup()
    {
        CpuParallel.Threads = 2;
        var rng = new Random(1);
        int n = Shape.B * Shape.T * Shape.H * Shape.D;
        float[] Make() => Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _q = Make(); _k = Make(); _v = Make(); _o = new float[n];
    }

    [Benchmark]
    public void Attention() => AttentionKernel.Run(_q, _k, _v, _o, Shape.B, Shape.T, Shape.T, Shape.H, Shape.D, 1f / MathF.Sqrt(Shape.D), false, default);
}
