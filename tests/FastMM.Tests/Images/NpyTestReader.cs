using System.Buffers.Binary;
using System.Text;
using System.Text.RegularExpressions;

namespace FastMM.Tests.Images;

/// <summary>
/// Minimal .npy reader for test goldens (C-order little-endian float32 and uint8 only). Test-local on purpose: the
/// product's npy/npz reader lives elsewhere and must not be what the goldens are checked with.
/// </summary>
internal sealed partial class NpyTestReader
{
    public required string Dtype { get; init; }
    public required int[] Shape { get; init; }
    public required byte[] Raw { get; init; }

    public long Count => Shape.Aggregate(1L, (a, b) => a * b);

    public static NpyTestReader Read(string path)
    {
        byte[] file = File.ReadAllBytes(path);
        if (file.Length < 10 || file[0] != 0x93 || Encoding.ASCII.GetString(file, 1, 5) != "NUMPY")
            throw new InvalidDataException($"{path}: not an .npy file");
        int major = file[6];
        int headerLen, headerStart;
        if (major == 1) { headerLen = BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan(8)); headerStart = 10; }
        else { headerLen = (int)BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(8)); headerStart = 12; }
        string header = Encoding.ASCII.GetString(file, headerStart, headerLen);

        string dtype = DescrRegex().Match(header).Groups[1].Value;
        if (header.Contains("'fortran_order': True"))
            throw new InvalidDataException($"{path}: Fortran order not supported");
        int[] shape = ShapeRegex().Match(header).Groups[1].Value
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(int.Parse).ToArray();
        byte[] raw = file[(headerStart + headerLen)..];
        return new NpyTestReader { Dtype = dtype, Shape = shape, Raw = raw };
    }

    public float[] AsFloat32()
    {
        if (Dtype != "<f4") throw new InvalidDataException($"dtype {Dtype} is not float32");
        var result = new float[Count];
        Buffer.BlockCopy(Raw, 0, result, 0, (int)(Count * 4));
        return result;
    }

    public byte[] AsUInt8()
    {
        if (Dtype != "|u1") throw new InvalidDataException($"dtype {Dtype} is not uint8");
        return Raw.AsSpan(0, (int)Count).ToArray();
    }

    [GeneratedRegex(@"'descr':\s*'([^']+)'")]
    private static partial Regex DescrRegex();

    [GeneratedRegex(@"'shape':\s*\(([^)]*)\)")]
    private static partial Regex ShapeRegex();
}
