"""French words of the dashboard (`services.web.i18n`): the pages' sentences, and the quality
rules' messages rebuilt from their English wording (pattern -> French, the named groups kept)."""

from __future__ import annotations

QUALITY_FR: dict[str, tuple[tuple[str, str], ...]] = {
    "missing_title": (
        (r"The objective needs a title\.", "L’objectif doit avoir un titre."),
        (r"The key result needs a title\.", "Le résultat clé doit avoir un titre."),
    ),
    "missing_period": (
        (
            r"The objective needs a period start date\.",
            "L’objectif doit avoir une date de début de période.",
        ),
        (
            r"The objective needs a period end date\.",
            "L’objectif doit avoir une date de fin de période.",
        ),
    ),
    "invalid_period": (
        (
            r"The period ends \((?P<end>[^)]*)\) before it starts \((?P<start>[^)]*)\), "
            r"or on that day\.",
            "La période se termine ({end}) avant de commencer ({start}), ou le même jour.",
        ),
    ),
    "no_key_results": (
        (
            r"The objective needs at least one key result saying how its success is measured\.",
            "L’objectif doit avoir au moins un résultat clé qui dit comment mesurer sa réussite.",
        ),
    ),
    "too_many_key_results": (
        (
            r"The objective has (?P<n>\d+) key results; more than (?P<max>\d+) dilutes focus\. "
            r"Keep the few that matter most\.",
            "L’objectif a {n} résultats clés ; au-delà de {max}, l’attention se disperse. "
            "Gardez les quelques-uns qui comptent le plus.",
        ),
    ),
    "long_period": (
        (
            r"The period is longer than a year; OKRs work best over a quarter or so\.",
            "La période dépasse un an ; les OKR fonctionnent mieux sur un trimestre environ.",
        ),
    ),
    "missing_target": (
        (
            r"The key result has no measurable target: say which value counts as success, "
            r"e\.g\. '\+30 %' or 'NPS 80'\.",
            "Le résultat clé n’a pas d’attente mesurable : dites quelle valeur vaut réussite, "
            "par exemple « +30 % » ou « NPS 80 ».",
        ),
        (
            r"The relative target (?P<rel>.+) only becomes a target once the baseline is known: "
            r"give the starting value\.",
            "La cible relative {rel} ne devient une cible qu’une fois la valeur de départ connue : "
            "indiquez-la.",
        ),
        (
            r"The range has no lower bound: give both ends of the range to land in\.",
            "La plage n’a pas de borne inférieure : donnez les deux bornes de la plage visée.",
        ),
        (
            r"The range has no upper bound: give both ends of the range to land in\.",
            "La plage n’a pas de borne supérieure : donnez les deux bornes de la plage visée.",
        ),
    ),
    "invalid_range": (
        (
            r"The range's lower bound \((?P<low>[^)]*)\) is above its upper bound "
            r"\((?P<high>[^)]*)\)\.",
            "La borne inférieure de la plage ({low}) dépasse sa borne supérieure ({high}).",
        ),
    ),
    "invalid_relative_target": (
        (
            r"The relative target (?P<rel>.+) cannot be read: write it like '\+30%', '-5 %' or "
            r"'\+1200'\.",
            "La cible relative {rel} est illisible : écrivez-la comme « +30% », « -5 % » ou "
            "« +1200 ».",
        ),
    ),
    "target_equals_baseline": (
        (
            r"The target equals the baseline \((?P<value>[^)]*)\): reaching it would change "
            r"nothing\.",
            "La cible est égale à la valeur de départ ({value}) : l’atteindre ne changerait rien.",
        ),
    ),
    "missing_metric": (
        (
            r"The key result has no metric or unit: say what is counted, e\.g\. 'units sold', "
            r"'%', 'NPS points' or 'minutes'\.",
            "Le résultat clé n’a ni indicateur ni unité : dites ce qui est compté, par exemple "
            "« unités vendues », « % », « points NPS » ou « minutes ».",
        ),
    ),
    "missing_baseline": (
        (
            r"The key result has no baseline: give the starting value progress is measured "
            r"from\.",
            "Le résultat clé n’a pas de valeur de départ : donnez celle à partir de laquelle la "
            "progression se mesure.",
        ),
    ),
    "missing_deadline": (
        (
            r"The key result has no deadline: say by when the target must be reached\.",
            "Le résultat clé n’a pas d’échéance : dites pour quand la cible doit être atteinte.",
        ),
    ),
    "activity_wording": (
        (
            r"'(?P<word>.+?)' describes an activity, not a result, and the title has no number: "
            r"state the outcome and how much of it, e\.g\. 'Reduce churn by 5 %'\.",
            "« {word} » décrit une activité, pas un résultat, et le titre ne contient aucun "
            "nombre : énoncez le résultat attendu et son ampleur, par exemple « Réduire le taux "
            "de désabonnement de 5 % ».",
        ),
    ),
    "deadline_after_period": (
        (
            r"The deadline \((?P<deadline>[^)]*)\) falls after the objective's period ends "
            r"\((?P<end>[^)]*)\)\.",
            "L’échéance ({deadline}) tombe après la fin de la période de l’objectif ({end}).",
        ),
    ),
    "direction_mismatch": (
        (
            r"The key result is an increase, but its target is below the baseline "
            r"\((?P<target>\S+) vs (?P<baseline>[^)]*)\)\.",
            "Le résultat clé est une augmentation, mais sa cible est sous la valeur de départ "
            "({target} contre {baseline}).",
        ),
        (
            r"The key result is a decrease, but its target is above the baseline "
            r"\((?P<target>\S+) vs (?P<baseline>[^)]*)\)\.",
            "Le résultat clé est une baisse, mais sa cible est au-dessus de la valeur de départ "
            "({target} contre {baseline}).",
        ),
    ),
    "relative_target_mismatch": (
        (
            r"The relative target (?P<rel>.+) means (?P<implied>\S+), but the target says "
            r"(?P<target>\S+); the target wins, the displayed text is misleading\.",
            "La cible relative {rel} donne {implied}, mais la cible indique {target} ; la cible "
            "l’emporte, le texte affiché est trompeur.",
        ),
    ),
    "milestone_values_ignored": (
        (
            r"A milestone is simply done \(1\) or not \(0\); its baseline and target are "
            r"ignored\.",
            "Un jalon est simplement atteint (1) ou non (0) ; sa valeur de départ et sa cible "
            "sont ignorées.",
        ),
    ),
}

FRENCH: dict[str, str] = {
    "Your role ({role}) may not do this ({permission}).": "Votre rôle ({role}) ne permet pas cette action ({permission}).",
    "This form was not sent from a page of this dashboard, or the page is too old. Nothing was saved: reload the page and try again.": "Ce formulaire ne vient pas d’une page de ce tableau de bord, ou la page est trop ancienne. Rien n’a été enregistré : rechargez la page et recommencez.",
    "The sign-in form expired. Please try again.": "Le formulaire de connexion a expiré. Veuillez recommencer.",
    "This API key is not valid (unknown, revoked or mistyped).": "Cette clé d’API n’est pas valide (inconnue, révoquée ou mal saisie).",
    "No objective {id}.": "Aucun objectif {id}.",
    "Score of the objective over its period": "Score de l’objectif sur sa période",
    "Each point is a change of score; its label says what moved it.": "Chaque point est un changement de score ; son libellé dit ce qui l’a fait bouger.",
    "Score of “{title}”": "Score de « {title} »",
    "Not a moment: {at}": "Ce n’est pas un instant : {at}",
    "The objective did not exist yet at {when}.": "L’objectif n’existait pas encore à {when}.",
    "Saved.": "Enregistré.",
    "Objective created.": "Objectif créé.",
    "Objective activated.": "Objectif activé.",
    "Objective closed.": "Objectif clôturé.",
    "Check-in recorded.": "Point d’avancement enregistré.",
    "Target revised.": "Cible révisée.",
    "KPI bound.": "KPI associé.",
    "KPI unbound.": "KPI dissocié.",
    "Someone changed this objective since this form was drawn (you saw version {version}). Nothing was saved: the page now shows the current values; check them and send the form again.": "Quelqu’un a modifié cet objectif depuis l’affichage de ce formulaire (vous aviez la version {version}). Rien n’a été enregistré : la page montre maintenant les valeurs actuelles ; vérifiez-les et renvoyez le formulaire.",
    "No such action.": "Action inconnue.",
    "Give the current value.": "Indiquez la valeur actuelle.",
    "No such key result.": "Résultat clé inconnu.",
    "Not created: fix the problems shown next to the fields.": "Non créé : corrigez les problèmes indiqués à côté des champs.",
    "No KPI {key}.": "Aucun KPI {key}.",
    "Series of {key}": "Série de {key}",
    "Each point is an accepted observation; its label names the event.": "Chaque point est une observation acceptée ; son libellé nomme l’événement.",
    "The export was refused: {why}": "L’export a été refusé : {why}",
    "Audit": "Audit",
    "Verify the history": "Vérifier l’historique",
    "Checks that every objective's events still fit their hash chain, that snapshots equal their events, and that okr.events carries exactly the stored events.": "Vérifie que les événements de chaque objectif respectent toujours leur chaîne de hachage, que les instantanés égalent leurs événements, et que okr.events porte exactement les événements stockés.",
    "Also check the okr.events topic (reads all of it)": "Vérifier aussi le topic okr.events (le lit en entier)",
    "Run verify": "Lancer la vérification",
    "Intact": "Intact",
    "{n} break(s)": "{n} rupture(s)",
    "Objectives": "Objectifs",
    "Events": "Événements",
    "Snapshots": "Instantanés",
    "Messages on okr.events": "Messages sur okr.events",
    "Redeliveries": "Redistributions",
    "Export the events": "Exporter les événements",
    "Every stored event with since ≤ time < until, in store order (leave a bound empty for no limit).": "Chaque événement stocké avec début ≤ instant < fin, dans l’ordre du stockage (laissez une borne vide pour ne pas limiter).",
    "Since": "Depuis",
    "Until": "Jusqu’à",
    "Format": "Format",
    "Download": "Télécharger",
    "Skip to content": "Aller au contenu",
    "Main": "Principal",
    "Overview": "Vue d’ensemble",
    "KPIs": "KPI",
    "New objective": "Nouvel objectif",
    "API docs": "Doc de l’API",
    "Connecting…": "Connexion…",
    "Language": "Langue",
    "Signed in as": "Connecté en tant que",
    "Sign out": "Se déconnecter",
    "Live": "En direct",
    "Connection lost — retrying": "Connexion perdue — nouvel essai",
    "Updated": "mis à jour",
    "This objective changed since you opened this form; sending it will be refused. Reload to see the current values.": "Cet objectif a changé depuis l’ouverture de ce formulaire ; l’envoyer sera refusé. Rechargez pour voir les valeurs actuelles.",
    "Try a request: Authorize with your API key.": "Pour essayer une requête : « Authorize » avec votre clé d’API.",
    "Breadcrumb": "Fil d’Ariane",
    "Accepted": "Acceptées",
    "Duplicates": "Doublons",
    "Stale": "Périmées",
    "Outside the period": "Hors période",
    "Unbound": "Non associées",
    "Latest value": "Dernière valeur",
    "Series, last {days} days": "Série, {days} derniers jours",
    "{n} observations": "{n} observations",
    "Latest observations as a table": "Dernières observations sous forme de tableau",
    "Observed at (UTC)": "Observée à (UTC)",
    "Value": "Valeur",
    "Event": "Événement",
    "Source": "Source",
    "Key results it feeds": "Résultats clés alimentés",
    "No key result is bound to this KPI.": "Aucun résultat clé n’est associé à ce KPI.",
    "Objective": "Objectif",
    "Aggregation": "Agrégation",
    "Period": "Période",
    "Status": "Statut",
    "Observations": "Observations",
    "No KPI event was scored yet.": "Aucun événement KPI n’a encore été compté.",
    "Every KPI the scorer has seen, with what it counted.": "Chaque KPI reçu par le calcul des scores, avec ce qu’il a compté.",
    "KPI": "KPI",
    "Key results": "Résultats clés",
    "Sign in": "Se connecter",
    "You are signed out.": "Vous êtes déconnecté.",
    "API key": "Clé d’API",
    "The key an administrator gave you (okr keys add). It is checked once; the browser then keeps a signed session for 8 hours.": "La clé qu’un administrateur vous a remise (okr keys add). Elle est vérifiée une fois ; le navigateur garde ensuite une session signée pendant 8 heures.",
    "Key result": "Résultat clé",
    "Title": "Titre",
    "Kind": "Type",
    "Metric or unit": "Indicateur ou unité",
    "Baseline": "Valeur de départ",
    "Target": "Cible",
    "or relative target (+30%)": "ou cible relative (+30%)",
    "Lower bound": "Borne inférieure",
    "Upper bound": "Borne supérieure",
    "Deadline": "Échéance",
    "Weight": "Poids",
    "Description": "Description",
    "Owner": "Responsable",
    "Team": "Équipe",
    "Period start": "Début de période",
    "Period end": "Fin de période",
    "Aligned to": "Aligné sur",
    "(none)": "(aucun)",
    "Add a key result": "Ajouter un résultat clé",
    "Create the objective": "Créer l’objectif",
    "What makes a good key result": "Ce qui fait un bon résultat clé",
    "A key result is measurable or it is refused: a metric, a starting value, a target and a deadline.": "Un résultat clé est mesurable ou il est refusé : un indicateur, une valeur de départ, une cible et une échéance.",
    "Well defined": "Correctement définis",
    "Increase sales of product X by 30 % by Q3": "Augmentation des ventes du produit X de 30 % d’ici le troisième trimestre",
    "units, from 1000, +30%": "unités, depuis 1000, +30%",
    "Reduce total churn by 5 %": "Réduction du taux de désabonnement total de 5 %",
    "% monthly churn, from 8, -5%": "% de désabonnement mensuel, depuis 8, -5%",
    "Raise NPS to 80": "Augmenter le score NPS à 80",
    "Cut the purchase path to 3–4 minutes": "Réduire le chemin d’achat à 3-4 minutes",
    "Not ideal": "Non idéaux",
    "Increase lead generation": "Augmentation de la génération de prospects",
    "no measurable, specific expectation": "pas d’attente mesurable et spécifique",
    "Identify and eliminate obstacles contributing to churn": "Identification et élimination des obstacles contribuant au désabonnement",
    "an activity, not a result": "une activité, pas un résultat",
    "Problems block creation; warnings are advice. They are checked as you type.": "Les problèmes bloquent la création ; les avertissements sont des conseils. Ils sont vérifiés pendant la saisie.",
    "version": "version",
    "Score": "Score",
    "final score": "score final",
    "Chain verified": "Chaîne vérifiée",
    "Chain BROKEN": "Chaîne ROMPUE",
    "{n} events checked": "{n} événements vérifiés",
    "head": "tête",
    "Decisions": "Décisions",
    "Activate": "Activer",
    "Close with a retrospective": "Clôturer avec une rétrospective",
    "Retrospective": "Rétrospective",
    "Reason (required)": "Motif (obligatoire)",
    "Close the objective": "Clôturer l’objectif",
    "Score timeline": "Évolution du score",
    "Whole period": "Toute la période",
    "Since the first change": "Depuis le premier changement",
    "Solid line: the score; dashed: the expected pace; each point says what moved it (hover or focus it).": "Trait plein : le score ; pointillés : le rythme attendu ; chaque point dit ce qui l’a fait bouger (survolez-le ou sélectionnez-le).",
    "{n} changes": "{n} changements",
    "Latest changes as a table": "Derniers changements sous forme de tableau",
    "Version": "Version",
    "When (UTC)": "Quand (UTC)",
    "Objective score": "Score de l’objectif",
    "What moved it": "Ce qui l’a fait bouger",
    "Current": "Actuelle",
    "Attainment": "Atteinte",
    "Confidence": "Confiance",
    "Last update": "Dernière mise à jour",
    "Pace": "Rythme",
    "from": "depuis",
    "Update “{title}”": "Mettre à jour « {title} »",
    "Check in": "Faire le point",
    "Current value": "Valeur actuelle",
    "Confidence (0–1 or %)": "Confiance (0–1 ou %)",
    "Note": "Note",
    "Revise the target": "Réviser la cible",
    "New target": "Nouvelle cible",
    "Revise": "Réviser",
    "Bind a KPI": "Associer un KPI",
    "KPI key": "Clé du KPI",
    "Aggregation over the period": "Agrégation sur la période",
    "Bind": "Associer",
    "Unbind {kpi}": "Dissocier {kpi}",
    "The key result keeps its value and is moved by check-ins again.": "Le résultat clé garde sa valeur et avance de nouveau par des points d’avancement.",
    "Unbind": "Dissocier",
    "Aligned objectives": "Objectifs alignés",
    "As of": "À une date",
    "Moment": "Instant",
    "or version": "ou version",
    "Show": "Afficher",
    "Rebuilt from the event store, not from the read models. The moment is in your browser's time zone (UTC without JavaScript).": "Reconstitué depuis le magasin d’événements, pas depuis les modèles de lecture. L’instant est dans le fuseau horaire de votre navigateur (UTC sans JavaScript).",
    "Version {v}": "Version {v}",
    "score": "score",
    "Decision history": "Historique des décisions",
    "Who": "Qui",
    "Decision": "Décision",
    "Why": "Pourquoi",
    "What changed (before → after)": "Ce qui a changé (avant → après)",
    "KPI scorer": "Calcul des KPI",
    "values moved by KPI events (see the score timeline)": "valeurs modifiées par des événements KPI (voir l’évolution du score)",
    "The latest decisions; the audit export has them all.": "Les dernières décisions ; l’export d’audit les contient toutes.",
    "all periods": "toutes périodes",
    "Filters": "Filtres",
    "all": "tous",
    "Apply": "Appliquer",
    "{n} objectives": "{n} objectifs",
    "No objective matches these filters.": "Aucun objectif ne correspond à ces filtres.",
    "Aligned to an objective outside these filters": "Aligné sur un objectif hors de ces filtres",
    "aligned": "aligné",
    "final": "final",
    "stale": "sans nouvelles",
    "Refused": "Refusé",
    "Not possible": "Impossible",
    "Back to the overview": "Retour à la vue d’ensemble",
    "check-in by {actor}: {value}": "point d’avancement de {actor} : {value}",
    "KPI {kpi}: {count} events, last {event}": "KPI {kpi} : {count} événements, dernier {event}",
    "created by {actor}": "créé par {actor}",
    "key result added by {actor}": "résultat clé ajouté par {actor}",
    "key result revised by {actor}": "résultat clé révisé par {actor}",
    "key result removed by {actor}": "résultat clé retiré par {actor}",
    "closed by {actor}": "clôturé par {actor}",
    "{n} problem(s) to fix": "{n} problème(s) à corriger",
    "ready, with {n} warning(s)": "prêt, avec {n} avertissement(s)",
    "ready: no problem found": "prêt : aucun problème",
    "up to version {v}": "jusqu’à la version {v}",
    "on track": "en bonne voie",
    "at risk": "à risque",
    "off track": "en retard",
    "not started": "pas commencé",
    "ended": "terminé",
    "draft": "brouillon",
    "active": "actif",
    "closed": "clôturé",
    "archived": "archivé",
    "admin": "admin",
    "editor": "éditeur",
    "reader": "lecteur",
    "auditor": "auditeur",
    "service": "service",
    "increase": "augmentation",
    "decrease": "baisse",
    "range": "plage",
    "at_least": "au moins",
    "at_most": "au plus",
    "milestone": "jalon",
}
"""English sentence of the pages -> French. Pace words, statuses, roles and kinds too."""
