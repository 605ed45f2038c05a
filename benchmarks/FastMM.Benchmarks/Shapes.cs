namespace FastMM.Benchmarks;

/// <summary>A GEMM C[M,N] = A[M,K]·W[N,K]ᵀ shape from a target model.</summary>
public sealed record GemmShape(string Name, int M, int N, int K)
{
    public double Flops => 2.0 * M * N * K;
    public override string ToString() => $"{Name} {M}x{N}x{K}";

    public static readonly GemmShape[] All =
    [
        new("CLIP-B/32 qkv/o", 50, 768, 768),
        new("CLIP-B/32 mlp.fc1", 50, 3072, 768),
        new("CLIP-B/32 mlp.fc2", 50, 768, 3072),
        new("CLIP-B/32 x8 fc1", 400, 3072, 768),
        new("SigLIP-B/16-512 qkv/o", 1024, 768, 768),
        new("SigLIP-B/16-512 fc1", 1024, 3072, 768),
        new("SigLIP-B/16-512 fc2", 1024, 768, 3072),
    ];
}

/// <summary>A self-attention shape: batch, heads, sequence length, head dim.</summary>
public sealed record AttentionShape(string Name, int B, int H, int T, int D)
{
    /// <summary>QKᵀ and P·V, 2 flops per multiply-add each.</summary>
    public double Flops => 4.0 * B * H * (double)T * T * D;
    public override string ToString() => $"{Name} B{B} H{H} T{T} D{D}";

    public static readonly AttentionShape[] All =
    [
        new("CLIP-B/32", 1, 12, 50, 64),
        new("SigLIP-B/16-512", 1, 12, 1024, 64),
    ];
}
