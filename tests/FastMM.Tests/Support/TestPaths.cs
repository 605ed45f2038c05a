using FastMM;
namespace FastMM.Tests.Support;

internal static class TestPaths
{
    /// <summary>tests/data as copied next to the test assembly.</summary>
    public static string Data => Path.Combine(AppContext.BaseDirectory, "data");
    public static string Model(string name) => Path.Combine(Data, "models", name);
    public static string Golden(string name) => Path.Combine(Data, "goldens", name + ".npz");

    /// <summary>A fresh temporary folder removed when disposed.</summary>
    public sealed class TempDir : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("fastmm-test-").FullName;
        public string this[string name] => System.IO.Path.Combine(Path, name);
        public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
    }
}

internal static class Compare
{
    /// <summary>The bound for ops a backend declares it runs with F16 operands (<see cref="IBackend.Precision"/>).</summary>
    public const double F16ComputeBound = 2e-3;

    /// <summary>An F32 tolerance, widened to <see cref="F16ComputeBound"/> on a backend that computes some ops with F16 operands.</summary>
    public static double ToleranceFor(IBackend backend, double f32Tolerance)
        => backend.Precision == BackendPrecision.F32 ? f32Tolerance : Math.Max(f32Tolerance, F16ComputeBound);

    /// <summary>‖a − b‖ / ‖b‖ in double precision.</summary>
    public static double RelativeL2(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        Assert.Equal(b.Length, a.Length);
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { double d = (double)a[i] - b[i]; num += d * d; den += (double)b[i] * b[i]; }
        return Math.Sqrt(num / Math.Max(den, 1e-300));
    }

    public static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double ab = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Length; i++) { ab += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
        return ab / Math.Sqrt(aa * bb);
    }

    /// <summary>Asserts relative L2 ≤ tol and cosine ≥ 1 − tol, naming what was compared.</summary>
    public static void Close(string what, ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double tol)
    {
        Assert.DoesNotContain(actual.ToArray(), float.IsNaN);
        double rel = RelativeL2(actual, expected), cos = Cosine(actual, expected);
        Assert.True(rel <= tol && cos >= 1 - tol, $"{what}: relative L2 {rel:E3} (tolerance {tol:E1}), cosine {cos:F9}");
    }
}
