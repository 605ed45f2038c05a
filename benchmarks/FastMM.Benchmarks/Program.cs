using BenchmarkDotNet.Running;
using FastMM.Benchmarks;

if (args.Length > 0 && args[0] == "gemm-quick")
{
    QuickBench.Run(args[1..]);
    return;
}
if (args.Length > 0 && args[0] == "kv-int8")
{
    KvCacheBench.Run(args[1..]);
    return;
}
if (args.Length > 0 && args[0] == "quant-quick")
{
    QuantQuickBench.Run(args[1..]);
    return;
}
BenchmarkSwitcher.FromAssembly(typeof(GemmShape).Assembly).Run(args);
