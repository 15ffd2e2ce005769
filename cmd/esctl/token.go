package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/esdhq/esd/internal/auth"
)

// envAuthFile is the auth file esctl token edits when --file is not given:
// the same variable esd reads for --auth-file.
const envAuthFile = "ESD_AUTH_FILE"

// esctl token edits the auth file directly (it never calls esd): esd
// reloads the file when it changes. Tokens are printed once, when made;
// the file keeps only their SHA-256.
func (a *app) newTokenCmd() *cobra.Command {
	var file string
	cmd := a.groupCmd("token", "Create, list and revoke bearer tokens and set roles in an auth file (esd --auth-file)")
	cmd.PersistentFlags().StringVar(&file, "file", "", "the auth file (env "+envAuthFile+"); created by token create if missing")
	path := func(c *cobra.Command) (string, error) {
		if !c.Flags().Changed("file") {
			if v, ok := a.lookupEnv(envAuthFile); ok && v != "" {
				return v, nil
			}
		}
		if file == "" {
			return "", usagef("--file is required (or %s)", envAuthFile)
		}
		return file, nil
	}

	var (
		identity string
		roles    []string
		expires  time.Duration
	)
	create := &cobra.Command{
		Use:   "create --identity NAME [--roles r1,r2] [--expires DURATION]",
		Short: "Make a token for an identity and print it (once: only its hash is stored)",
		Long: `Make a token for an identity and print it on stdout. The token is shown
this once: the file keeps only its SHA-256. --roles sets the identity's
roles (creating the identity); without it the identity must exist.
A running esd picks the change up within a second.`,
		Args: cobra.NoArgs,
		RunE: a.action(func(c *cobra.Command, _ []string) error {
			p, err := path(c)
			if err != nil {
				return err
			}
			if identity == "" {
				return usagef("--identity is required")
			}
			if expires < 0 {
				return usagef("--expires must not be negative")
			}
			f, err := auth.LoadOrEmpty(p)
			if err != nil {
				return err
			}
			if c.Flags().Changed("roles") {
				f.Identities[identity] = auth.Identity{Roles: roles}
			} else if _, ok := f.Identities[identity]; !ok {
				return usagef("identity %q is not in %s: give --roles to create it", identity, p)
			}
			now := time.Now()
			var until time.Time
			if expires > 0 {
				until = now.Add(expires)
			}
			tok, t, err := auth.NewToken(f, identity, now, until)
			if err != nil {
				return err
			}
			if err := auth.WriteFile(p, f); err != nil {
				return err
			}
			if a.output != formatTable {
				return a.printJSON(map[string]any{"id": t.ID, "identity": t.Identity, "token": tok, "expires": t.Expires})
			}
			fmt.Fprintln(a.stdout, tok)
			fmt.Fprintf(a.stderr, "token %s for %s: store it now, it is not shown again\n", t.ID, identity)
			return nil
		}),
	}
	create.Flags().StringVar(&identity, "identity", "", "the identity the token authenticates as")
	create.Flags().StringSliceVar(&roles, "roles", nil, "set the identity's roles (comma-separated)")
	create.Flags().DurationVar(&expires, "expires", 0, "validity, e.g. 720h (0 = no expiry)")

	ls := &cobra.Command{
		Use:   "ls",
		Short: "List tokens (no secrets: the file has none)",
		Args:  cobra.NoArgs,
		RunE: a.action(func(c *cobra.Command, _ []string) error {
			p, err := path(c)
			if err != nil {
				return err
			}
			f, err := auth.ReadFile(p)
			if err != nil {
				return err
			}
			if a.output != formatTable {
				type row struct {
					ID       string     `json:"id"`
					Identity string     `json:"identity"`
					Roles    []string   `json:"roles"`
					Created  time.Time  `json:"created"`
					Expires  *time.Time `json:"expires,omitempty"`
				}
				rows := make([]row, 0, len(f.Tokens))
				for _, t := range f.Tokens {
					rows = append(rows, row{t.ID, t.Identity, f.Identities[t.Identity].Roles, t.Created, t.Expires})
				}
				return a.printJSON(rows)
			}
			tw := newTabWriter(a.stdout)
			fmt.Fprintln(tw, "ID\tIDENTITY\tROLES\tCREATED\tEXPIRES")
			now := time.Now()
			for _, t := range f.Tokens {
				exp := "never"
				if t.Expires != nil {
					exp = t.Expires.Format(time.RFC3339)
					if !now.Before(*t.Expires) {
						exp += " (expired)"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Identity, strings.Join(f.Identities[t.Identity].Roles, ","), t.Created.Format(time.RFC3339), exp)
			}
			return tw.Flush()
		}),
	}

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Remove a token: esd refuses it once it has reloaded the file (within a second)",
		Args:  cobra.ExactArgs(1),
		RunE: a.action(func(c *cobra.Command, args []string) error {
			p, err := path(c)
			if err != nil {
				return err
			}
			f, err := auth.ReadFile(p)
			if err != nil {
				return err
			}
			if !auth.Revoke(f, args[0]) {
				return fmt.Errorf("no token %q in %s", args[0], p)
			}
			if err := auth.WriteFile(p, f); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "token %s revoked\n", args[0])
			return nil
		}),
	}

	var grants []string
	roleSet := &cobra.Command{
		Use:   "set NAME --grant PREFIX:PERM[,PERM...] ...",
		Short: "Define a role (replacing it): --grant 'orders-:read,append' --grant '*:subscribe'",
		Args:  cobra.ExactArgs(1),
		RunE: a.action(func(c *cobra.Command, args []string) error {
			p, err := path(c)
			if err != nil {
				return err
			}
			var gs []auth.Grant
			for _, g := range grants {
				prefix, perms, ok := strings.Cut(g, ":")
				if !ok || prefix == "" || perms == "" {
					return usagef("--grant %q: want PREFIX:PERM[,PERM...], e.g. 'orders-:read,append' or '*:read'", g)
				}
				gr := auth.Grant{Prefix: prefix}
				for _, pm := range strings.Split(perms, ",") {
					gr.Permissions = append(gr.Permissions, auth.Permission(strings.TrimSpace(pm)))
				}
				gs = append(gs, gr)
			}
			if len(gs) == 0 {
				return usagef("give at least one --grant")
			}
			f, err := auth.LoadOrEmpty(p)
			if err != nil {
				return err
			}
			f.Roles[args[0]] = gs
			if err := f.Check(); err != nil {
				return &usageError{err}
			}
			return auth.WriteFile(p, f)
		}),
	}
	roleSet.Flags().StringArrayVar(&grants, "grant", nil, "PREFIX:PERM[,PERM...] (repeatable); PREFIX '*' is every stream; PERM read, append, delete, subscribe, admin")
	roleLs := &cobra.Command{
		Use:   "ls",
		Short: "List roles and the identities that hold them",
		Args:  cobra.NoArgs,
		RunE: a.action(func(c *cobra.Command, _ []string) error {
			p, err := path(c)
			if err != nil {
				return err
			}
			f, err := auth.ReadFile(p)
			if err != nil {
				return err
			}
			if a.output != formatTable {
				return a.printJSON(map[string]any{"roles": f.Roles, "identities": f.Identities})
			}
			tw := newTabWriter(a.stdout)
			fmt.Fprintln(tw, "ROLE\tGRANTS\tIDENTITIES")
			names := make([]string, 0, len(f.Roles))
			for n := range f.Roles {
				names = append(names, n)
			}
			slices.Sort(names)
			for _, n := range names {
				var gs, ids []string
				for _, g := range f.Roles[n] {
					perms := make([]string, len(g.Permissions))
					for i, pm := range g.Permissions {
						perms[i] = string(pm)
					}
					gs = append(gs, g.Prefix+":"+strings.Join(perms, ","))
				}
				for id, who := range f.Identities {
					if slices.Contains(who.Roles, n) {
						ids = append(ids, id)
					}
				}
				slices.Sort(ids)
				fmt.Fprintf(tw, "%s\t%s\t%s\n", n, strings.Join(gs, " "), strings.Join(ids, ","))
			}
			return tw.Flush()
		}),
	}
	role := a.groupCmd("role", "Define and list roles: grants of permissions on stream prefixes")
	role.AddCommand(roleSet, roleLs)

	var idRoles []string
	identitySet := &cobra.Command{
		Use:   "set NAME --roles r1,r2",
		Short: "Give an identity its roles (replacing them), e.g. the common name of an mTLS client certificate",
		Long: `Give an identity its roles, replacing those it had; the identity is made
if missing. An identity is a token holder's name or the Subject Common
Name of a client certificate that esd verified (--tls-client-ca): such a
client needs no token. --roles "" leaves it no permission.`,
		Example: `  esctl token role set reader --grant '*:read,subscribe'
  esctl token identity set billing.example.com --roles reader`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(c *cobra.Command, args []string) error {
			p, err := path(c)
			if err != nil {
				return err
			}
			if !c.Flags().Changed("roles") {
				return usagef("--roles is required (--roles \"\" for none)")
			}
			f, err := auth.LoadOrEmpty(p)
			if err != nil {
				return err
			}
			id := f.Identities[args[0]]
			id.Roles = slices.DeleteFunc(slices.Clone(idRoles), func(r string) bool { return r == "" })
			f.Identities[args[0]] = id
			if err := f.Check(); err != nil {
				return &usageError{err}
			}
			return auth.WriteFile(p, f)
		}),
	}
	identitySet.Flags().StringSliceVar(&idRoles, "roles", nil, "the identity's roles (esctl token role set defines them)")
	ident := a.groupCmd("identity", "Give identities (token holders, client certificates' common names) their roles")
	ident.AddCommand(identitySet)
	cmd.AddCommand(create, ls, revoke, role, ident)
	return cmd
}

// printJSON prints v as JSON (indented for -o json, one line for jsonl).
func (a *app) printJSON(v any) error {
	var b []byte
	var err error
	if a.output == formatJSON {
		b, err = json.MarshalIndent(v, "", "  ")
	} else {
		b, err = json.Marshal(v)
	}
	if err != nil {
		return err
	}
	_, err = a.stdout.Write(append(b, '\n'))
	return err
}
