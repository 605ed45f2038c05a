using System.Text;
using System.Text.Json;

namespace FastMM.Models.IO;

/// <summary>
/// Writes a .safetensors file: 8-byte header length, JSON header (names sorted, offsets in order), data.
/// Tensors are produced one at a time by a callback, so multi-GB files never sit in memory whole.
/// </summary>
public static class SafetensorsWriter
{
    public sealed record Entry(string Name, DType DType, int[] Shape, Action<Span<float>> Fill);

    public static void Write(string path, IReadOnlyList<Entry> entries, IReadOnlyDictionary<string, string>? metadata = null, Action<int, int>? progress = null)
    {
        var sorted = entries.OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
        var header = new Dictionary<string, object>();
        if (metadata is not null) header["__metadata__"] = metadata;
        long offset = 0;
        foreach (var e in sorted)
        {
            if (e.DType is not (DType.F32 or DType.F16 or DType.BF16)) throw new ArgumentException($"{e.Name}: only float tensors can be written");
            long bytes = Tensor.Product(e.Shape) * DTypeInfo.SizeOf(e.DType);
            header[e.Name] = new { dtype = e.DType.ToString(), shape = e.Shape, data_offsets = new[] { offset, offset + bytes } };
            offset += bytes;
        }
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(header);
        int pad = (8 - json.Length % 8) % 8;
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        fs.Write(BitConverter.GetBytes((ulong)(json.Length + pad)));
        fs.Write(json);
        fs.Write(Encoding.ASCII.GetBytes(new string(' ', pad)));
        for (int i = 0; i < sorted.Count; i++)
        {
            var e = sorted[i];
            var values = new float[Tensor.Product(e.Shape)];
            e.Fill(values);
            switch (e.DType)
            {
                case DType.F32:
                    fs.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
                    break;
                case DType.F16:
                    {
                        var h = new Half[values.Length];
                        System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, h);
                        fs.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(h.AsSpan()));
                        break;
                    }
                case DType.BF16:
                    {
                        var h = new ushort[values.Length];
                        for (int j = 0; j < values.Length; j++)
                        {
                            uint bits = BitConverter.SingleToUInt32Bits(values[j]);
                            h[j] = (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16); // round to nearest even
                        }
                        fs.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(h.AsSpan()));
                        break;
                    }
            }
            progress?.Invoke(i + 1, sorted.Count);
        }
    }
}
