namespace FastMM;

/// <summary>
/// A dense row-major tensor that lives on one backend. Models only pass tensors between backend ops;
/// the storage object is the backend's business (a pooled float[] on the CPU, a device pointer on a GPU).
/// A view (<see cref="Reshape"/>) shares storage and does not own it.
/// </summary>
public sealed class Tensor : IDisposable
{
    public IBackend Backend { get; }
    public int[] Shape { get; }
    public DType DType { get; }
    internal object? Storage { get; private set; }
    private readonly bool _ownsStorage;

    public Tensor(IBackend backend, int[] shape, DType dtype, object storage, bool ownsStorage = true)
    {
        Backend = backend; Shape = shape; DType = dtype; Storage = storage; _ownsStorage = ownsStorage;
    }

    public long Length => Product(Shape);
    public int Rank => Shape.Length;
    public int Dim(int i) => Shape[i < 0 ? Shape.Length + i : i];

    /// <summary>A view with another shape over the same elements.</summary>
    public Tensor Reshape(params int[] shape)
    {
        int infer = Array.IndexOf(shape, -1);
        if (infer >= 0)
        {
            long known = 1;
            for (int i = 0; i < shape.Length; i++) if (i != infer) known *= shape[i];
            shape = (int[])shape.Clone();
            shape[infer] = (int)(Length / known);
        }
        if (Product(shape) != Length)
            throw new ArgumentException($"cannot reshape [{string.Join(",", Shape)}] to [{string.Join(",", shape)}]");
        return new Tensor(Backend, shape, DType, Storage ?? throw new ObjectDisposedException(nameof(Tensor)), ownsStorage: false);
    }

    public float[] ToArray()
    {
        var a = new float[Length];
        Backend.ToHost(this, a);
        return a;
    }

    public void Dispose()
    {
        if (Storage is null) return;
        if (_ownsStorage) Backend.Release(this);
        Storage = null;
    }

    public static long Product(ReadOnlySpan<int> shape)
    {
        long p = 1;
        foreach (int d in shape) p *= d;
        return p;
    }

    public override string ToString() => $"Tensor[{string.Join(", ", Shape)}] {DType} on {Backend.Name}";
}
