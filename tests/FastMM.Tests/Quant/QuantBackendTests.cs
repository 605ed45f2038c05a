using FastMM.Backends;
using FastMM.Cpu;
using FastMM.Quant;
using FastMM.Tests.Cpu;
using Xunit;
using static FastMM.Tests.Cpu.CpuTestUtil;

namespace FastMM.Tests.Quant;

[Collection(CpuKernelCollection.Name)]
public unsafe class QuantBackendTests
{
    private static LinearWeight Prepare(IBackend backend, float[] w, int n, int k, float[]? bias, QuantType type, string name = "layer.weight")
    {
        fixed (float* pw = w) fixed (float* pb = bias)
        {
            var wd = new TensorData(name, DType.F32, [n, k], (byte*)pw, (long)w.Length * 4);
            TensorData? bd = bias is null ? null : new TensorData("layer.bias", DType.F32, [n], (byte*)pb, (long)n * 4);
            return backend.Linear(wd, bd, type);
        }
    }

    private static float[] Apply(IBackend backend, LinearWeight lw, float[] x, int m, Activation act)
    {
        using var xt = backend.FromHost(x, 1, m, lw.InFeatures);
        using var y = backend.Linear(xt, lw, act);
        Assert.Equal([1, m, lw.OutFeatures], y.Shape);
        var host = new float[y.Length];
        backend.ToHost(y, host);
        return host;
    }

    [Fact]
    public void BlockTypes_RunTheQuantizedKernel_WithFusedActivation()
    {
        int seed = NewSeed(); var rng = new Random(seed);
        using var backend = new CpuBackend();
        int m = 3, n = 40, k = 256;
        float[] w = RandomArray(rng, n * k), bias = RandomArray(rng, n), x = RandomArray(rng, m * k);
        foreach (var type in QuantTestData.BlockTypes)
        {
            using var lw = Prepare(backend, w, n, k, bias, type);
            var matrix = QuantizedMatrix.Quantize(w, n, k, type);
            Assert.Equal(matrix.ByteSize, lw.WeightBytes);
            var want = new float[m * n];
            QuantGemm.Linear(x, m, matrix, bias, want, Activation.GeluTanh);
            Assert.Equal(want, Apply(backend, lw, x, m, Activation.GeluTanh));

            // The same matrix handed over pre-quantized gives the same product.
            using var pre = backend.Linear(QuantizedMatrix.FromBytes(matrix.Bytes, n, k, type), bias);
            Assert.Equal(want, Apply(backend, pre, x, m, Activation.GeluTanh));
        }
    }

    [Theory]
    [InlineData(QuantType.F32)]
    [InlineData(QuantType.F16)]
    [InlineData(QuantType.BF16)]
    public void PlainTypes_ComputeInF32OnWeightsRoundedToTheType(QuantType type)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        using var backend = new CpuBackend();
        int m = 2, n = 33, k = 50; // plain formats take any K
        float[] w = RandomArray(rng, n * k), x = RandomArray(rng, m * k);
        var rounded = QuantizedMatrix.Quantize(w, n, k, type).DequantizeAll();
        using var lw = Prepare(backend, w, n, k, null, type);
        using var reference = backend.Linear(rounded, n, k, []);
        Assert.Equal(Apply(backend, reference, x, m, Activation.None), Apply(backend, lw, x, m, Activation.None));
        if (type != QuantType.F32) Assert.NotEqual(w, rounded);
    }

    [Fact]
    public void BadInputs_FailWithClearErrors()
    {
        using var backend = new CpuBackend();
        var e = Assert.Throws<FastMMException>(() => Prepare(backend, new float[4 * 100], 4, 100, null, QuantType.Q8_0, "mlp.down_proj.weight"));
        Assert.Contains("mlp.down_proj.weight", e.Message);
        Assert.Contains("100", e.Message);
        Assert.Contains("32", e.Message);

        var q = QuantizedMatrix.Quantize(new float[4 * 64], 4, 64, QuantType.Q4_0);
        e = Assert.Throws<FastMMException>(() => backend.Linear(q, new float[3]));
        Assert.Contains("3", e.Message);
        Assert.Contains("4", e.Message);
    }

    [Fact]
    public void ProfilingBackend_ForwardsQuantizedLinears()
    {
        int seed = NewSeed(); var rng = new Random(seed);
        using var profiled = new ProfilingBackend(new CpuBackend());
        int n = 16, k = 64;
        float[] w = RandomArray(rng, n * k), x = RandomArray(rng, k);
        using var a = Prepare(profiled, w, n, k, null, QuantType.Q4_0);
        using var b = profiled.Linear(QuantizedMatrix.Quantize(w, n, k, QuantType.Q4_0), []);
        Assert.Equal(Apply(profiled, a, x, 1, Activation.Relu), Apply(profiled, b, x, 1, Activation.Relu));
        Assert.Equal(2, profiled.Stats[$"Linear {n}x{k} +Relu"].Calls);
    }
}
