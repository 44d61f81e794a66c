#pragma once
/// @file
/// `ModelSpec`: a model described in JSON (meshes, FSDP units, params, optimizer), as
/// `corockpt statedict --spec` and the tests read it (issue 3, "The spec file"):
///
/// ```json
/// {"world_size": 8,
///  "meshes": {"dp_ep": {"shape": [2, 4], "dim_names": ["dp", "ep"]}, ...},
///  "units": [{"name": "experts", "prefix": "second.ep_layers.{expert}.", "mesh": "dp_ep",
///             "layout": "flat", "shard_dim": "dp", "expert_dim": "ep", "num_experts": 4}, ...],
///  "params": [{"unit": "experts", "name": "net1.0.weight", "shape": [16, 16],
///              "dtype": "float32", "frozen": false, "buffer": false}, ...],
///  "optimizer": {"type": "adam", "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8,
///                "weight_decay": 0.0}}
/// ```
/// A buffer may say `"forward_mutates": false` (default true): forward does not change
/// it (see ParamSpec::forward_mutates); the key is refused on a param that is not a buffer.
/// Defaults: `prefix` "", `layout` "flat", `dtype` "float32", `frozen`/`buffer` false;
/// Adam lr 1e-3, betas [0.9, 0.999], eps 1e-8, weight_decay 0; SGD lr 1e-3, momentum 0,
/// weight_decay 0 (PyTorch's). `optimizer` may be absent (no optimizer). Unknown keys are
/// errors, so a typo never silently becomes a default.
///
/// Parsing validates the whole spec; every error is Errc::invalid_argument and its
/// message names the offending mesh, unit, param (by FQN where it has one) or key.
/// Where a unit's params live (experts per rank, meshes, placements) is in
/// unit_placement.hpp.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "corockpt/ckpt/dtype.hpp"
#include "corockpt/runtime/error.hpp"

namespace corockpt {

/// A named mesh over ranks 0..world_size-1, laid out row-major.
struct MeshSpec {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<std::string> dim_names;
};

/// How a unit holds its params: `per_param` (FSDP2: each param sharded on its own) or
/// `flat` (FSDP1's FlatParameter: params concatenated in order, one dtype, padded so
/// every rank holds an equal slice).
enum class UnitLayout { flat, per_param };

/// "flat" or "per_param".
std::string_view to_string(UnitLayout layout);

/// An FSDP unit. Empty strings mean "absent".
struct UnitSpec {
  std::string name;
  std::string prefix;  ///< FQN prefix; an expert unit's holds "{expert}"
  std::string mesh;    ///< a MeshSpec's name
  UnitLayout layout = UnitLayout::flat;
  std::string shard_dim;       ///< with expert_dim or replicate_dim: the dim shards split along
  std::string expert_dim;      ///< expert parallelism: experts are divided along this dim
  std::int64_t num_experts = 0;  ///< with expert_dim; 0 otherwise
  std::string replicate_dim;   ///< HSDP (2-D mesh): replicated along this dim

  bool has_experts() const { return !expert_dim.empty(); }
};

/// A parameter (or, with `buffer`, a buffer) of a unit.
struct ParamSpec {
  std::string unit;  ///< a UnitSpec's name
  std::string name;  ///< relative to the unit's prefix
  std::vector<std::int64_t> shape;
  DType dtype = DType::float32;
  bool frozen = false;  ///< requires_grad = False: in the model state, no optimizer state
  bool buffer = false;  ///< a plain unsharded tensor on every rank holding the unit
  /// Buffers only: the training loop's forward changes it (BatchNorm's running
  /// statistics, a counter), so an asynchronous save captures it when the save is
  /// requested, before the next forward runs; the snapshot fences protect only what the
  /// optimizer step changes. false: only the optimizer step (or nothing) changes it, and
  /// it is copied with its unit behind that unit's fence. Must stay true on a non-buffer.
  bool forward_mutates = true;

  bool has_optimizer_state() const { return !frozen && !buffer; }
};

enum class OptimizerType { adam, sgd };

/// "adam" or "sgd".
std::string_view to_string(OptimizerType type);

struct OptimizerSpec {
  OptimizerType type = OptimizerType::adam;
  double lr = 1e-3;
  std::array<double, 2> betas{0.9, 0.999};  ///< Adam only
  double eps = 1e-8;                         ///< Adam only
  double weight_decay = 0.0;
  double momentum = 0.0;  ///< SGD only; 0 means no momentum_buffer state
};

struct ModelSpec {
  int world_size = 0;
  std::vector<MeshSpec> meshes;    ///< in file order
  std::vector<UnitSpec> units;     ///< in registration (file) order
  std::vector<ParamSpec> params;   ///< in file order
  std::optional<OptimizerSpec> optimizer;

  /// nullptr when there is none of that name.
  const MeshSpec* find_mesh(std::string_view name) const;
  const UnitSpec* find_unit(std::string_view name) const;
};

/// Parses and validates a spec. @returns Errc::invalid_argument naming the key that is
/// malformed, missing, of the wrong type or unknown, or the item `validate` rejects.
Result<ModelSpec> parse_model_spec(std::string_view json_text);

/// Reads `path` and parses it. @returns Errc::not_found (or the read error) with the
/// path, or parse_model_spec's errors with the path in their context.
Result<ModelSpec> load_model_spec(const std::string& path);

/// Checks a spec built in code the way parsing does. Rejects: world_size < 1; a mesh
/// whose shape is invalid or whose size is not world_size; a unit with an empty or
/// repeated name, an unknown mesh, or a shard/expert/replicate dim its mesh lacks;
/// expert units without shard_dim or with num_experts < 1 or not divisible by the size
/// of expert_dim; "{expert}" in a non-expert unit's prefix (or missing from an expert
/// unit's with several experts); replicate_dim without shard_dim or on a mesh that is
/// not 2-D; expert_dim together with replicate_dim; shard_dim alone on a mesh of more
/// than one dim; a param of an unknown unit, with an empty name or a negative size;
/// duplicate FQNs (every expert's); forward_mutates false on a param that is not a
/// buffer; a `flat` unit whose non-buffer params mix dtypes;
/// optimizer values PyTorch rejects (lr, eps, weight_decay, momentum < 0, betas
/// outside [0, 1)).
Result<void> validate(const ModelSpec& spec);

/// The canonical FQN of `param` for one expert of its unit: the prefix with every
/// "{expert}" replaced by the index, then the name. `expert` is -1 for a non-expert
/// unit (the prefix is used as is).
std::string fqn(const UnitSpec& unit, const ParamSpec& param, int expert);

}  // namespace corockpt
