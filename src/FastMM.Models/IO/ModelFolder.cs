using System.Text.Json;

namespace FastMM.Models.IO;

/// <summary>
/// A Hugging Face model folder: config.json plus model.safetensors, or shards listed by
/// model.safetensors.index.json. Tensors are looked up by their HF names.
/// </summary>
public sealed class ModelFolder : IDisposable
{
    private readonly List<SafetensorsFile> _files = new();
    private readonly Dictionary<string, SafetensorsFile> _byTensor = new(StringComparer.Ordinal);
    private readonly Dictionary<string, QuantizedTensors.Entry> _quantized = new(StringComparer.Ordinal);

    public string Directory { get; }
    public HfConfig Config { get; }
    public IReadOnlyList<SafetensorsFile> Files => _files;

    private ModelFolder(string dir, HfConfig config) { Directory = dir; Config = config; }

    public static ModelFolder Open(string dir, Action<int, int>? onFileOpened = null)
    {
        if (!System.IO.Directory.Exists(dir)) throw new FastMMException($"{dir}: model folder not found");
        var config = HfConfig.Load(System.IO.Path.Combine(dir, "config.json"));
        var folder = new ModelFolder(dir, config);
        try
        {
            string single = System.IO.Path.Combine(dir, "model.safetensors");
            string index = System.IO.Path.Combine(dir, "model.safetensors.index.json");
            List<string> shardNames;
            if (File.Exists(index)) shardNames = ReadIndex(index, dir);
            else if (File.Exists(single)) shardNames = ["model.safetensors"];
            else throw new FastMMException($"{dir}: no model.safetensors or model.safetensors.index.json (other weight formats are not supported yet)");

            for (int i = 0; i < shardNames.Count; i++)
            {
                var f = SafetensorsFile.Open(System.IO.Path.Combine(dir, shardNames[i]));
                folder._files.Add(f);
                foreach (var n in f.Names)
                {
                    if (folder._byTensor.TryGetValue(n, out var other))
                        throw new FastMMException($"{dir}: tensor '{n}' appears in both {System.IO.Path.GetFileName(other.Path)} and {shardNames[i]}");
                    folder._byTensor[n] = f;
                }
                foreach (var (n, e) in QuantizedTensors.Read(f)) folder._quantized[n] = e;
                onFileOpened?.Invoke(i + 1, shardNames.Count);
            }
            return folder;
        }
        catch
        {
            folder.Dispose();
            throw;
        }
    }

    private static List<string> ReadIndex(string indexPath, string dir)
    {
        using var doc = HfConfig.ParseJsonFile(indexPath);
        if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw new FastMMException($"{indexPath}: missing 'weight_map' object");
        var shards = new List<string>();
        foreach (var p in map.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String) throw new FastMMException($"{indexPath}: weight_map['{p.Name}'] is not a file name");
            string shard = p.Value.GetString()!;
            // Shards must be plain file names inside the folder: no path traversal through a hostile index.
            if (shard.Length == 0 || shard != System.IO.Path.GetFileName(shard) || shard is "." or "..")
                throw new FastMMException($"{indexPath}: weight_map['{p.Name}'] = '{shard}' is not a file name in the model folder");
            if (!shards.Contains(shard)) shards.Add(shard);
        }
        foreach (var s in shards)
            if (!File.Exists(System.IO.Path.Combine(dir, s))) throw new FastMMException($"{indexPath}: shard '{s}' listed in weight_map is missing from {dir}");
        return shards;
    }

    public bool Has(string name) => _byTensor.ContainsKey(name);

    public IEnumerable<string> TensorNames => _byTensor.Keys;

    public TensorData Get(string name)
    {
        if (_quantized.TryGetValue(name, out var q))
            throw new FastMMException($"{Directory}: tensor '{name}' is stored quantized ({Quant.QuantFormats.Get(q.Type).Name}) where FastMM needs floats; quantize from the original folder");
        if (_byTensor.TryGetValue(name, out var f) && f.TryGet(name, out var t)) return t;
        throw new FastMMException($"{Directory}: missing tensor '{name}'");
    }

    /// <summary>Tensors stored in FastMM's quantized format (see <see cref="QuantizedTensors"/>).</summary>
    public IReadOnlyDictionary<string, QuantizedTensors.Entry> Quantized => _quantized;

    /// <summary>A quantized Linear weight, its logical shape checked against the one the config implies.</summary>
    public Quant.QuantizedMatrix GetQuantized(string name, int rows, int columns)
    {
        var e = _quantized[name];
        if (e.Rows != rows || e.Columns != columns)
            throw new FastMMException($"{Directory}: quantized tensor '{name}' has shape [{e.Rows}, {e.Columns}], config.json implies [{rows}, {columns}]");
        _byTensor[name].TryGet(name, out var t);
        return Quant.QuantizedMatrix.FromBytes(t.Bytes, rows, columns, e.Type, name);
    }

    /// <summary>Gets a tensor and checks its shape against the one the config implies.</summary>
    public TensorData Get(string name, params int[] expectedShape)
    {
        var t = Get(name);
        if (!t.Shape.AsSpan().SequenceEqual(expectedShape))
            throw new FastMMException($"{Directory}: tensor '{name}' has shape {t.ShapeString}, config.json implies [{string.Join(", ", expectedShape)}]");
        return t;
    }

    public bool TryGet(string name, out TensorData t)
    {
        if (_byTensor.TryGetValue(name, out var f) && f.TryGet(name, out t)) return true;
        t = default;
        return false;
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}
