using System.Diagnostics;
using FastMM.Ilgpu;
using FastMM.Tests.Support;
using Xunit.Abstractions;

namespace FastMM.Tests.Backends;

/// <summary>
/// Every ILGPU kernel compiles to PTX without a GPU, and (where CUDA's ptxas exists: CI installs it through
/// scripts/check-kernels.sh and sets FASTMM_REQUIRE_PTXAS=1) assembles for sm_80 and sm_90 with no spills.
/// </summary>
public class IlgpuPtxTests(ITestOutputHelper output)
{
    private static string? FindPtxas()
    {
        var dirs = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')
            .Concat(["/usr/lib/nvidia-cuda-toolkit/bin", "/usr/local/cuda/bin"]);
        return dirs.Select(d => Path.Combine(d, "ptxas")).FirstOrDefault(File.Exists);
    }

    [Fact]
    public void EveryKernelAssemblesForSm80AndSm90()
    {
        var kernels = IlgpuPtx.Generate().ToList();
        Assert.Equal(IlgpuPtx.Kernels.Count, kernels.Count);
        foreach (var (name, ptx) in kernels)
        {
            Assert.Contains(".target sm_80", ptx);
            Assert.Contains(".entry", ptx);
        }
        string? ptxas = FindPtxas();
        if (ptxas is null)
        {
            Assert.True(Environment.GetEnvironmentVariable("FASTMM_REQUIRE_PTXAS") != "1", "FASTMM_REQUIRE_PTXAS=1 but no ptxas was found (scripts/check-kernels.sh installs CUDA 11.8)");
            output.WriteLine($"ptxas not found: {kernels.Count} kernels generated PTX, not assembled");
            return;
        }
        using var dir = new TestPaths.TempDir();
        foreach (var (name, ptx) in kernels)
        {
            string file = dir[name + ".ptx"];
            File.WriteAllText(file, ptx);
            foreach (var arch in new[] { "sm_80", "sm_90" })
            {
                var psi = new ProcessStartInfo(ptxas, ["-v", $"-arch={arch}", file, "-o", dir[$"{name}.{arch}.cubin"]])
                    { RedirectStandardError = true, RedirectStandardOutput = true };
                using var p = Process.Start(psi)!;
                string err = p.StandardError.ReadToEnd() + p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                Assert.True(p.ExitCode == 0, $"ptxas {arch} {name}: {err}");
                string regs = err.Split('\n').FirstOrDefault(l => l.Contains("registers"))?.Trim() ?? "";
                output.WriteLine($"{name,-20} {arch}: {regs}");
                Assert.DoesNotContain("bytes spill stores", err.Replace("0 bytes spill stores", ""));
            }
        }
    }
}
